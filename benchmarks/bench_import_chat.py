"""The same 50,000-row xlsx imported from the chat, inside the running server.

A rep sends `/导入`, uploads the workbook on the signed page the bot answers with, and
taps 导入有效的 N 行 on the result card; WeCom callbacks keep coming at a steady rate the
whole time, and their latency is measured from each one's schedule (as bench_import does
for the CLI, which runs in a process of its own). The server's memory is sampled too.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

import aiohttp

from benchmarks.bench_callbacks import _post
from benchmarks.bench_import import (
    CAP,
    RATE,
    REPS,
    ROWS,
    _callbacks,
    _on_duty,
    _traffic,
    callback_figures,
    generate,
)
from benchmarks.common import memory_mb, wecom_stack
from tests.fakes.wecom import FakeWeCom

IMPORTER = "bench-importer"
_LINK = re.compile(r"http://127\.0\.0\.1:\d+/import/[\w.\-]+")


async def _sent(http: aiohttp.ClientSession, fake_url: str, userid: str) -> list[dict]:
    async with http.get(fake_url + "/_sent", params={"userid": userid}) as response:
        return await response.json()


async def _wait_for(probe, seconds: float = 600):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError("the chat import did not get there in time")


def _state(db, import_id: int) -> str | None:  # noqa: ANN001
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT state FROM lead_imports WHERE id = ?", (import_id,)).fetchone()
    return row[0] if row else None


async def _sample_memory(pid: int, running: asyncio.Event, peak: list[float]) -> None:
    while running.is_set():
        peak.append(memory_mb(pid)[1])
        await asyncio.sleep(0.25)


async def run() -> dict[str, object]:
    roster = [{"name": f"销售{n:03d}", "role": "rep", "wecom_userid": f"bench{n:04d}",
               "team": "华南"} for n in range(REPS)]
    roster.append({"name": "市场部小李", "role": "marketing", "wecom_userid": IMPORTER,
                   "team": "华南"})
    extra = {"SALESBOT_LEADS__MAX_OPEN_LEADS": str(CAP)}
    async with wecom_stack(roster, **extra) as stack:
        url = stack.base + "/wecom/callback"
        book = stack.work / "leads.xlsx"
        await asyncio.to_thread(generate, book)
        data = book.read_bytes()
        await _on_duty(url)
        items = await asyncio.to_thread(_callbacks, RATE * 900)
        sealer = FakeWeCom()
        async with aiohttp.ClientSession() as http:
            ask = sealer.seal(sealer.text_xml(IMPORTER, "/导入", msg_id="7480000000000000001"))
            await _post(http, url, (ask.params, ask.body.encode("utf-8")))

            async def link() -> str | None:
                for message in await _sent(http, stack.fake_url, IMPORTER):
                    found = _LINK.search(json.dumps(message, ensure_ascii=False))
                    if found:
                        return found.group(0)
                return None

            page = await _wait_for(link, 30)
            running = asyncio.Event()
            running.set()
            peak: list[float] = []
            memory = asyncio.create_task(_sample_memory(stack.bot.pid, running, peak))
            traffic = asyncio.create_task(_traffic(url, items, running))
            await asyncio.sleep(1)
            started = time.monotonic()
            form = aiohttp.FormData()
            form.add_field("file", data, filename="leads.xlsx",
                           content_type="application/octet-stream")
            async with http.post(page, data=form) as response:
                upload_status = response.status
                await response.read()

            async def card() -> dict | None:
                for message in await _sent(http, stack.fake_url, IMPORTER):
                    body = message.get("template_card") or {}
                    for button in body.get("button_list") or []:
                        if str(button.get("key", "")).startswith("import:"):
                            return body | {"key": button["key"]}
                return None

            checked = await _wait_for(card)
            checked_s = time.monotonic() - started
            async with http.get(stack.fake_url + "/_click",
                                params={"userid": IMPORTER, "task_id": checked["task_id"],
                                        "key": checked["key"]}) as response:
                click = await response.json()
            await _post(http, url, (click["params"], click["body"].encode("utf-8")))
            import_id = int(checked["key"].partition(":")[2])

            async def published() -> bool:
                return await asyncio.to_thread(_state, stack.db, import_id) == "published"

            await _wait_for(published)
            import_s = time.monotonic() - started
            running.clear()
            latencies = await traffic
            await memory
    return {
        "rows": ROWS, "upload_status": upload_status,
        "checked_seconds": round(checked_s, 1), "import_seconds": round(import_s, 1),
        "server_peak_rss_mb": round(max(peak, default=0), 1),
        **callback_figures(latencies),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=2))
