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
import time
from pathlib import Path

import aiohttp

from benchmarks.common import API_TOKEN, fake_stats, memory_mb, percentile, wecom_stack
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
    roster = [{"name": f"销售{n:02d}", "role": "rep", "wecom_userid": f"rep{n:02d}",
               "team": "华南"} for n in range(REPS)]
    async with wecom_stack(roster) as stack:
        await _start_duty(stack.base + "/wecom/callback")
        await asyncio.sleep(2)  # the duty replies go out before the leads arrive
        posted = await _post_all(stack.base)
        stored = _counts(stack.db)
        started = time.monotonic()
        while time.monotonic() - started < DELIVERY_TIMEOUT:
            counts = _counts(stack.db)
            if counts["cards_sent"] + counts["failed"] >= LEADS:
                break
            await asyncio.sleep(2)
        delivered_s = time.monotonic() - started
        rss, peak = memory_mb(stack.bot.pid)
        fake = await fake_stats(stack)
    return {
        "post": posted, "after_post": stored, "after_delivery": _counts(stack.db),
        "delivery_seconds": round(delivered_s, 1), "fake_wecom": fake,
        "server_rss_mb": round(rss, 1), "server_peak_rss_mb": round(peak, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=2))
