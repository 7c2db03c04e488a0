"""The inbox: every inbound event recorded under its idempotency key before it is acked.

Owns recording (batched: many callbacks share one short write) and the worker tasks
that hand recorded events to the dispatcher; recovers unprocessed events at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from bot.events import Event
from storage.models import InboundEvent

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

WORKERS = 4
BATCH = 200


@dataclass(slots=True)
class _Pending:
    event: Event
    done: asyncio.Future[bool]


class Inbox:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._writes: asyncio.Queue[_Pending] = asyncio.Queue()
        # One queue per worker, chosen by sender: a member's events keep their order.
        self._work: list[asyncio.Queue[tuple[int, Event]]] = [
            asyncio.Queue() for _ in range(WORKERS)
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, workers: bool = True) -> None:
        self._tasks.append(asyncio.create_task(self._writer(), name="inbox-writer"))
        if not workers:
            return
        for number, queue in enumerate(self._work):
            self._tasks.append(
                asyncio.create_task(self._worker(queue), name=f"inbox-{number}"))

    def _queue(self, record_id: int, event: Event) -> None:
        self._work[hash(event.sender) % len(self._work)].put_nowait((record_id, event))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def record(self, event: Event) -> bool:
        """Store the event; True if it is new, False for a repeated delivery.

        Raises if the write fails, so the caller does not acknowledge and the platform
        delivers again.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._writes.put(_Pending(event, future))
        return await future

    async def recover(self) -> int:
        """Queue the events recorded but not processed before the last stop."""
        async with self.rt.sessions() as session:
            rows = (await session.execute(
                select(InboundEvent.id, InboundEvent.payload)
                .where(InboundEvent.state == "received").order_by(InboundEvent.id)
            )).all()
        for record_id, payload in rows:
            self._queue(record_id, Event.from_json(payload))
        if rows:
            log.info("recovered %d unprocessed events", len(rows))
        return len(rows)

    async def drain(self) -> None:
        """Wait until every queued event has been processed (tests and benchmarks)."""
        for queue in self._work:
            await queue.join()

    async def _writer(self) -> None:
        while True:
            batch = [await self._writes.get()]
            while len(batch) < BATCH and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            try:
                fresh = await self._insert(batch)
            except Exception as exc:
                log.exception("could not record %d inbound events", len(batch))
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                continue
            for item in batch:
                record_id = fresh.pop((item.event.channel, item.event.key), None)
                if record_id is not None:
                    self._queue(record_id, item.event)
                if not item.done.done():
                    item.done.set_result(record_id is not None)

    async def _insert(self, batch: list[_Pending]) -> dict[tuple[str, str], int]:
        rows, seen = [], set()
        now = self.rt.now()
        for item in batch:
            event = item.event
            if (event.channel, event.key) in seen:
                continue
            seen.add((event.channel, event.key))
            rows.append({
                "channel": event.channel, "key": event.key, "kind": event.kind,
                "sender": event.sender[:64] or None, "payload": event.to_json(),
                "state": "received", "received_at": now,
            })
        dialect = sqlite if self.rt.is_sqlite else postgresql
        statement = (
            dialect.insert(InboundEvent).values(rows)
            .on_conflict_do_nothing(index_elements=["channel", "key"])
            .returning(InboundEvent.id, InboundEvent.channel, InboundEvent.key)
        )
        async with self.rt.sessions(urgent=True) as session, session.begin():
            result = await session.execute(statement)
            return {(channel, key): record_id for record_id, channel, key in result.all()}

    async def _worker(self, queue: asyncio.Queue[tuple[int, Event]]) -> None:
        while True:
            record_id, event = await queue.get()
            try:
                await self.rt.dispatcher.process(record_id, event)
            except Exception:
                log.exception("dispatch of event %s raised", record_id)
            finally:
                queue.task_done()
