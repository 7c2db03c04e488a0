"""Coalescing concurrent requests into one transaction (SQLite commits one at a time, so
twenty leads in one commit cost little more than one).

A failing batch is retried item by item, so one bad item fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], limit: int = 50) -> None:
        self._run = run
        self._limit = limit
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="batcher")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._limit and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            try:
                results = await self._run([item for item, _ in live])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if len(live) == 1:
                    _settle_error(live[0][1], exc)
                    continue
                log.warning("a batch of %d failed; retrying one by one", len(live))
                for item, future in live:
                    try:
                        [result] = await self._run([item])
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        _settle_error(future, exc)
                    else:
                        _settle(future, result)
                continue
            for (_, future), result in zip(live, results, strict=True):
                _settle(future, result)


def _settle(future: asyncio.Future[R], result: R) -> None:
    if not future.done():
        future.set_result(result)


def _settle_error(future: asyncio.Future[R], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
