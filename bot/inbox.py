"""The inbox: every inbound event recorded under its idempotency key before it is acked.

Owns recording (batched: many callbacks share one short write) and the worker tasks
that hand recorded events to the dispatcher; recovers unprocessed events at start-up.
On SQLite, a batch that cannot be written quickly (another process holds the one write
lock: an import publishing 50,000 leads) is made durable in a journal file and acked;
it is written to the database as soon as the lock is free, or from the journal at the
next start.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from bot.events import Event
from storage.models import InboundEvent

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

WORKERS = 4
BATCH = 200
# A batch not in the database by then is journaled and acked: WeCom's answer is due in 5 s
# and ours is measured in tens of milliseconds.
JOURNAL_AFTER = 0.1
RETRY_SECONDS = 1.0


@dataclass(slots=True)
class _Pending:
    event: Event
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())
    journaled: bool = False


class Journal:
    """Inbound events kept in a file (one JSON line each, fsynced) until the database has
    them: one file per process, next to the SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_database(cls, url: str) -> Journal | None:
        parsed = make_url(url)
        database = parsed.database
        if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
            return None
        # The pid says whose it is; the token tells this process from an earlier one that
        # had the same pid (a container restarted).
        token = secrets.token_hex(4)
        return cls(Path(f"{database}.inbox-{os.getpid()}-{token}.journal"))

    def append(self, events: list[Event]) -> None:
        lines = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in events)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        """Journals of processes that are gone."""
        prefix = self.path.name.split(".inbox-", 1)[0] + ".inbox-"
        found = []
        for path in sorted(self.path.parent.glob(glob.escape(prefix) + "*.journal")):
            if path == self.path:
                continue
            pid = path.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                found.append(path)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_journal(path: Path) -> list[Event]:
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(Event.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            log.error("inbox journal %s: an unreadable line skipped", path.name)
    return events


class Inbox:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._writes: asyncio.Queue[_Pending] = asyncio.Queue()
        # One queue per worker, chosen by sender: a member's events keep their order.
        self._work: list[asyncio.Queue[tuple[int, Event]]] = [
            asyncio.Queue() for _ in range(WORKERS)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self.journal = Journal.for_database(rt.settings.database.url) if rt.is_sqlite \
            else None
        self._carried: list[_Pending] = []  # journaled, acked, not yet in the database

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
        pending = _Pending(event)
        await self._writes.put(pending)
        return await pending.done

    async def recover(self) -> int:
        """Write the events journals kept (a crash before they reached the database),
        then queue the events recorded but not processed before the last stop."""
        for path in self.journal.leftovers() if self.journal is not None else []:
            events = await asyncio.to_thread(_read_journal, path)
            if events:
                await self._insert([_Pending(event) for event in events])
                log.warning("inbox journal %s: %d events written", path.name, len(events))
            path.unlink(missing_ok=True)
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
            batch, self._carried = self._carried, []
            if not batch or not self._writes.empty():
                batch.append(await self._writes.get())
            while len(batch) < BATCH and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            insert = asyncio.ensure_future(self._insert(batch))
            if self.journal is not None:
                done, _ = await asyncio.wait({insert}, timeout=JOURNAL_AFTER)
                if not done:
                    await self._journal_until(insert, batch)
            try:
                fresh = await insert
            except Exception as exc:
                log.exception("could not record %d inbound events", len(batch))
                self._carried = [item for item in batch if item.journaled] + self._carried
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                if self._carried:
                    await asyncio.sleep(RETRY_SECONDS)  # acked: they must get in
                continue
            for item in batch:
                record_id = fresh.pop((item.event.channel, item.event.key), None)
                if record_id is not None:
                    self._queue(record_id, item.event)
                if not item.done.done():
                    item.done.set_result(record_id is not None)
            if self.journal is not None and any(item.journaled for item in batch) \
                    and not self._carried:
                await asyncio.to_thread(self.journal.clear)

    async def _journal_until(self, insert: asyncio.Future[object],
                             batch: list[_Pending]) -> None:
        """While the insert waits for the write lock: journal and ack its batch, and every
        event that comes meanwhile (carried into the next batch)."""
        assert self.journal is not None
        waiting = batch
        while True:
            try:
                await asyncio.to_thread(self.journal.append, [p.event for p in waiting])
            except OSError:
                log.exception("inbox journal %s cannot be written", self.journal.path)
                return  # not acked: the callbacks wait for the database as before
            for item in waiting:
                item.journaled = True
                if not item.done.done():
                    item.done.set_result(True)  # kept: a repeat is told apart when written
            if waiting is not batch:
                self._carried += waiting
            getter = asyncio.ensure_future(self._writes.get())
            done, _ = await asyncio.wait({insert, getter},
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return
            waiting = [getter.result()]
            while not self._writes.empty():
                waiting.append(self._writes.get_nowait())

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
