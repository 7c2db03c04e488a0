"""Runs the fake WeCom of tests/fakes on 127.0.0.1 in its own process, with its limits on.

`GET /_stats` reports what it delivered and dropped, per member; `GET /_sent?userid=` lists
what a member was sent; `GET /_click?userid=&task_id=&key=` seals a card click.
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

    async def sent(request: web.Request) -> web.Response:
        return web.json_response(fake.sent_to(request.query["userid"]))

    async def click(request: web.Request) -> web.Response:
        # Sealed by this fake, so the ResponseCode it carries is one the fake knows.
        q = request.query
        box = fake.seal(fake.click_xml(q["userid"], q["task_id"], q["key"]))
        return web.json_response({"params": box.params, "body": box.body})

    fake.app.router.add_get("/_stats", stats)
    fake.app.router.add_get("/_sent", sent)
    fake.app.router.add_get("/_click", click)
    url = await fake.start()
    url_file.write_text(url)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url_file", type=Path)
    asyncio.run(main(parser.parse_args().url_file))
