"""The lead sweep inside `serve`: expired offers re-routed, queued leads offered.

A plain asyncio loop for now; the scheduler with its single-runner guard replaces the
loop when the engine arrives, keeping these jobs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from handlers.assignment import drain_queue, expire_offers

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 30.0


async def sweep_once(rt: Runtime) -> tuple[int, int]:
    expired = await expire_offers(rt)
    offered = await drain_queue(rt)
    if expired or offered:
        log.info("sweep: %d offers expired, %d queued leads offered", expired, offered)
    return expired, offered


class Sweeper:
    def __init__(self, rt: Runtime, interval: float = INTERVAL_SECONDS) -> None:
        self.rt = rt
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="lead-sweep")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await sweep_once(self.rt)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lead sweep failed")
