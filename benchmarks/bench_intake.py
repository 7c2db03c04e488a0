"""2,000 leads posted to the intake API for a team of 20 reps on duty with no cap.

Measures the time until every lead is stored, assigned and its card in the outbox (one
transaction per lead, so that is when the last 201 arrives), then lets the outbox
deliver to the fake WeCom with its per-member limits on, and checks that nothing was
dropped and no rep got more than the budget in any minute.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.common import (
    API_TOKEN,
    PYTHON,
    bot_env,
    free_port,
    import_roster,
    memory_mb,
    percentile,
    process,
    wait_http,
    write_roster,
)
from tests.fakes.wecom import FakeWeCom

REPS = 20
LEADS = 2000
CONCURRENCY = 20
DELIVERY_TIMEOUT = 900


def _lead(n: int) -> dict[str, str]:
    return {
        "company": f"示例科技{n:05d}有限公司", "contact": "张伟",
        "phone": f"138{n:08d}", "industry": ("工业", "medical", "教育")[n % 3],
        "urgency": ("高", "medium", "低")[n % 3], "source": ("展会", "SEM", "referral")[n % 3],
        "external_id": f"bench-{n}",
    }


async def _start_duty(url: str) -> None:
    sealer = FakeWeCom()
    async with aiohttp.ClientSession() as http:
        for n in range(REPS):
            box = sealer.seal(sealer.text_xml(f"rep{n:02d}", "/上班"))
            async with http.post(url, params=box.params, data=box.body.encode()) as response:
                assert response.status == 200, response.status


async def _post_all(base: str) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(range(LEADS - 1, -1, -1))
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async def poster() -> None:
            while queue:
                n = queue.pop()
                began = time.perf_counter()
                async with http.post(base + "/api/v1/leads", json=_lead(n)) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 2), "statuses": statuses,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1)}


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "leads": one("SELECT count(*) FROM leads"),
            "assigned": one("SELECT count(*) FROM leads WHERE status = 'assigned'"),
            "cards_in_outbox": one("SELECT count(*) FROM outbox WHERE kind = 'card'"),
            "cards_sent": one("SELECT count(*) FROM outbox WHERE kind = 'card' "
                              "AND state = 'sent'"),
            "failed": one("SELECT count(*) FROM outbox WHERE state = 'failed'"),
            "max_leads_per_rep": one("SELECT max(c) FROM (SELECT count(*) c FROM leads "
                                     "GROUP BY assignee_id)"),
            "min_leads_per_rep": one("SELECT min(c) FROM (SELECT count(*) c FROM leads "
                                     "GROUP BY assignee_id)"),
        }


async def run() -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="salesbot-bench-"))
    db = work / "intake.db"
    url_file = work / "fake.url"
    port = free_port()
    with process([PYTHON, "-m", "benchmarks.fake_wecom_server", str(url_file)],
                 bot_env("", 0, ""), work / "fake.log"):
        for _ in range(100):
            if url_file.exists() and url_file.read_text():
                break
            await asyncio.sleep(0.1)
        fake_url = url_file.read_text()
        env = bot_env(f"sqlite+aiosqlite:///{db}", port, fake_url)
        roster = work / "roster.csv"
        write_roster(roster, [
            {"name": f"销售{n:02d}", "role": "rep", "wecom_userid": f"rep{n:02d}",
             "team": "华南"} for n in range(REPS)
        ])
        await asyncio.to_thread(import_roster, roster, env)
        with process([PYTHON, "-m", "bot.cli", "serve"], env, work / "bot.log") as bot:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/healthz")
            await _start_duty(base + "/wecom/callback")
            await asyncio.sleep(2)  # the duty replies go out before the leads arrive
            posted = await _post_all(base)
            stored = _counts(db)
            started = time.monotonic()
            while time.monotonic() - started < DELIVERY_TIMEOUT:
                counts = _counts(db)
                if counts["cards_sent"] + counts["failed"] >= LEADS:
                    break
                await asyncio.sleep(2)
            delivered_s = time.monotonic() - started
            rss, peak = memory_mb(bot.pid)
            async with aiohttp.ClientSession() as http:
                async with http.get(fake_url + "/_stats") as response:
                    fake_stats = await response.json()
    return {
        "post": posted, "after_post": stored, "after_delivery": _counts(db),
        "delivery_seconds": round(delivered_s, 1), "fake_wecom": fake_stats,
        "server_rss_mb": round(rss, 1), "server_peak_rss_mb": round(peak, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=2))
