"""Runs the fake WeCom of tests/fakes on 127.0.0.1 in its own process, with its limits on.

`GET /_stats` reports what it delivered and dropped, per member.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path

from aiohttp import web

from tests.fakes.wecom import FakeWeCom


def _windows(times: list[float], width: float) -> int:
    """The most messages inside any window of `width` seconds."""
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] > width:
            start += 1
        best = max(best, end - start + 1)
    return best


async def main(url_file: Path) -> None:
    fake = FakeWeCom(limits=True)
    received: dict[str, list[float]] = {}
    original = fake._receive

    def receive(userid, message):  # noqa: ANN001 - keep the fake's own signature
        received.setdefault(userid, []).append(asyncio.get_running_loop().time())
        original(userid, message)

    fake._receive = receive

    async def stats(request: web.Request) -> web.Response:
        kinds = Counter(m["msgtype"] for m in fake.messages)
        return web.json_response({
            "delivered": len(fake.messages), "dropped": len(fake.dropped),
            "by_type": dict(kinds), "gettoken": fake.gettoken_calls,
            "max_per_minute": max((_windows(t, 60) for t in received.values()), default=0),
            "members": len(received),
        })

    fake.app.router.add_get("/_stats", stats)
    url = await fake.start()
    url_file.write_text(url)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url_file", type=Path)
    asyncio.run(main(parser.parse_args().url_file))
