"""The web simulator in a real browser: a rep picks themself, sees the lead card, accepts it,
and the card changes in place. Headless Chromium from the system, driven by Playwright.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.app import build_runtime, create_app
from bot.demo import load_demo
from tests.harness import WORKDAY_MORNING, FrozenClock

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS = Path("/tmp")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: the browser test must run in CI")
    pytest.skip(f"{reason} on this machine")


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        _missing("chromium is not installed (/usr/bin/chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed")
    return path


@pytest.fixture
async def sim_server(settings) -> AsyncIterator[tuple[str, object]]:
    """The real app on a free loopback port, with the demo team and its leads offered."""
    rt = build_runtime(settings)
    rt.clock = FrozenClock(WORKDAY_MORNING)
    runner = web.AppRunner(create_app(settings, rt), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    await load_demo(rt)
    rt.outbox.wake()
    try:
        yield f"http://{host}:{port}", rt
    finally:
        await runner.cleanup()


async def test_rep_accepts_the_lead_card_and_it_changes_in_place(sim_server):
    executable = chromium_path()
    from playwright.async_api import async_playwright, expect

    base, _ = sim_server
    outside: list[str] = []

    async def only_this_server(route) -> None:
        if route.request.url.startswith(base + "/"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 820},
                                          locale="zh-CN")
            await page.route("**/*", only_this_server)
            await page.goto(base + "/sim")

            await page.locator(".members button", has_text="王芳").click()
            card = page.locator(".card", has_text="新线索 #1")
            await expect(card).to_be_visible()
            await expect(card).to_contain_text("深圳示例精密制造有限公司")
            await expect(card.locator("button")).to_have_count(3)
            await page.screenshot(path=str(SCREENSHOTS / "salesbot-sim-offered.png"))

            await card.get_by_role("button", name="接受").click()
            await expect(card.locator(".card-status")).to_have_text(
                "✔ 王芳 已于 12-02 10:00 接受")
            await expect(card.locator("button")).to_have_count(0)
            await expect(page.locator(".bubble", has_text="已接受线索 #1")).to_be_visible()
            # Changed in place: still one card for the lead, not a second one below.
            await expect(page.locator(".card", has_text="新线索 #1")).to_have_count(1)

            await page.screenshot(path=str(SCREENSHOTS / "salesbot-sim-accepted.png"))
        finally:
            await browser.close()
    assert outside == []


async def test_the_page_reopens_with_the_member_and_cards_as_they_are_now(sim_server):
    executable = chromium_path()
    from playwright.async_api import async_playwright, expect

    base, _ = sim_server
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(base + "/sim")
            await page.locator(".members button", has_text="赵强").click()
            card = page.locator(".card", has_text="新线索 #2")
            await card.get_by_role("button", name="接受").click()
            await expect(card.locator(".card-status")).to_contain_text("赵强 已于")

            await page.reload()
            await expect(page.locator("#who")).to_contain_text("赵强")
            reopened = page.locator(".card", has_text="新线索 #2")
            await expect(reopened.locator(".card-status")).to_contain_text("赵强 已于")
            await expect(reopened.locator("button")).to_have_count(0)

            await page.locator("#text").fill("/我的线索")
            await page.locator("#text").press("Enter")
            my_leads = page.locator(".bubble", has_text="您的进行中线索（1 条）")
            await expect(my_leads).to_be_visible()
        finally:
            await browser.close()
