"""WeCom text callbacks from 200 members against `salesbot serve` and the fake WeCom.

1. open loop: a steady 500 callbacks a second for 10 s, latency measured from each
   callback's scheduled time (so a stalled server cannot hide behind a slow client);
2. closed loop: 50 concurrent senders for 10 s, the rate the server holds.
Then it waits until every recorded event is processed and reports the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiohttp

from benchmarks.common import fake_stats, memory_mb, percentile, wecom_stack
from tests.fakes.wecom import FakeWeCom

MEMBERS = 200
RATE = 500
SECONDS = 10
CONCURRENCY = 50
TEXTS = ("/帮助", "记录 今天电话沟通了需求", "/我的线索", "你好")


def _callbacks(count: int, start: int) -> list[tuple[dict[str, str], bytes]]:
    sealer = FakeWeCom()
    sealed = []
    for n in range(count):
        member = f"bench{(start + n) % MEMBERS:04d}"
        plain = sealer.text_xml(member, TEXTS[n % len(TEXTS)],
                                msg_id=str(7400000000000000000 + start + n))
        box = sealer.seal(plain)
        sealed.append((box.params, box.body.encode("utf-8")))
    return sealed


async def _post(http: aiohttp.ClientSession, url: str, item) -> int:
    params, body = item
    async with http.post(url, params=params, data=body,
                         headers={"Content-Type": "text/xml"}) as response:
        await response.read()
        return response.status


async def open_loop(url: str, items) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2

        async def one(index: int, item) -> None:
            nonlocal failures
            scheduled = t0 + index / RATE
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            try:
                status = await _post(http, url, item)
            except aiohttp.ClientError:
                status = 0
            if status != 200:
                failures += 1
            latencies.append(loop.time() - scheduled)

        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        elapsed = loop.time() - t0
    return {
        "sent": len(items), "failed": failures, "offered_rate": RATE,
        "achieved_rate": round(len(items) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


async def closed_loop(url: str, items) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(reversed(items))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SECONDS
        start = loop.time()

        async def sender() -> None:
            while queue and loop.time() < deadline:
                item = queue.pop()
                began = loop.time()
                await _post(http, url, item)
                latencies.append(loop.time() - began)

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        elapsed = loop.time() - start
    return {
        "concurrency": CONCURRENCY, "completed": len(latencies),
        "rate_held": round(len(latencies) / elapsed, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
    }


def _backlog(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        total = conn.execute("SELECT count(*) FROM inbound_events").fetchone()[0]
        waiting = conn.execute(
            "SELECT count(*) FROM inbound_events WHERE state = 'received'").fetchone()[0]
    return total, waiting


async def run() -> dict[str, object]:
    roster = [{"name": f"销售{n:03d}", "role": "rep", "wecom_userid": f"bench{n:04d}",
               "team": "华南"} for n in range(MEMBERS)]
    async with wecom_stack(roster) as stack:
        url = stack.base + "/wecom/callback"
        items = await asyncio.to_thread(_callbacks, RATE * SECONDS, 0)
        warm = await asyncio.to_thread(_callbacks, 200, 900_000)
        await closed_loop(url, warm)
        opened = await open_loop(url, items)
        closed_items = await asyncio.to_thread(_callbacks, 30_000, 100_000)
        closed = await closed_loop(url, closed_items)
        started = time.monotonic()
        while _backlog(stack.db)[1] and time.monotonic() - started < 600:
            await asyncio.sleep(1)
        total, waiting = _backlog(stack.db)
        drain_s = time.monotonic() - started
        rss, peak = memory_mb(stack.bot.pid)
        fake = await fake_stats(stack)
    return {
        "open_loop": opened, "closed_loop": closed,
        "events_recorded": total, "events_unprocessed": waiting,
        "backlog_drained_after_s": round(drain_s, 1),
        "server_rss_mb": round(rss, 1), "server_peak_rss_mb": round(peak, 1),
        "fake_wecom": fake,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=2))
