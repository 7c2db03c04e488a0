"""Chat imports run in a process of their own, so the server keeps its deadlines.

Reading a workbook and checking 50,000 rows is a minute of Python work. In a thread of
the server it competes with the event loop for the interpreter lock and every callback
waits behind it; in its own process it competes only for a core, as `salesbot leads
import` does, and its memory is returned when it ends. The worker opens the same database
with its own Runtime (channels built, not started): what it has to say (progress notes,
digests) goes into the outbox, which the server delivers.

The worker reads the server's clock: the system clock when the server runs on it, else
the server's reading when the job began (a server on a frozen clock gets a worker frozen
at the same moment).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from config.settings import Settings
    from handlers.lead_import import ImportOptions, ImportReport

log = logging.getLogger(__name__)

# Imports checked or written at once on one server; the next waits its turn.
WORKERS = 1
_turns: dict[int, asyncio.Semaphore] = {}


@dataclass(frozen=True)
class Notes:
    """Who hears the progress and how: ProgressNotes' arguments, sent to the worker."""

    member_id: int
    channel: str | None
    text: str
    step: int


@dataclass(frozen=True)
class Job:
    kind: str  # check | publish
    settings: Settings
    now: datetime | None  # None: the system clock
    actor_id: int | None
    notes: Notes | None
    import_id: int | None = None
    data: bytes = b""
    filename: str = ""
    options: ImportOptions | None = None
    origin: str = "chat"
    skip_invalid: bool = True


async def check(rt: Runtime, data: bytes, filename: str, options: ImportOptions, *,
                actor_id: int | None, origin: str, notes: Notes | None) -> ImportReport:
    """check_import in a worker process."""
    return await _run(rt, Job("check", portable(rt.settings), _now(rt), actor_id, notes, data=data,
                              filename=filename, options=options, origin=origin))


async def publish(rt: Runtime, import_id: int, *, actor_id: int | None, skip_invalid: bool,
                  notes: Notes | None) -> ImportReport:
    """publish_import in a worker process."""
    return await _run(rt, Job("publish", portable(rt.settings), _now(rt), actor_id, notes,
                              import_id=import_id, skip_invalid=skip_invalid))


def _now(rt: Runtime) -> datetime | None:
    from bot.runtime import system_clock

    return None if rt.clock is system_clock else rt.now()


def portable(settings: Settings) -> Settings:
    """The settings as the base class holds them: load_settings returns a subclass made
    on the fly (to name the TOML file), which cannot be pickled; its values can."""
    from config.settings import Settings

    return Settings.model_construct(**{name: getattr(settings, name)
                                       for name in Settings.model_fields})


async def _run(rt: Runtime, job: Job) -> ImportReport:
    turn = _turns.setdefault(id(rt), asyncio.Semaphore(WORKERS))
    async with turn:
        # A fresh interpreter each time ("spawn"): forking a server with threads running
        # copies locks in whatever state they are, and the memory goes back at the end.
        pool = ProcessPoolExecutor(max_workers=1,
                                   mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work, job)
        finally:
            pool.shutdown(wait=False)


def work(job: Job) -> ImportReport:
    """The worker's side (module level, so the pool can pickle a reference to it)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_work(job))


async def _work(job: Job) -> ImportReport:
    from bot.app import build_runtime
    from handlers import lead_import
    from handlers.import_chat import ProgressNotes
    from storage.models import Member

    rt = build_runtime(job.settings)
    if job.now is not None:
        frozen = job.now
        rt.clock = lambda: frozen
    try:
        async with rt.sessions() as session:
            actor = await session.get(Member, job.actor_id) if job.actor_id else None
        notes = None
        if job.notes is not None:
            notes = ProgressNotes(rt, job.notes.member_id, job.notes.channel, job.notes.text)
            notes.step = notes.next_at = max(1, job.notes.step)
        try:
            if job.kind == "check":
                assert job.options is not None
                return await lead_import.check_import(
                    rt, job.data, job.filename, job.options, actor=actor, origin=job.origin,
                    progress=notes)
            assert job.import_id is not None
            return await lead_import.publish_import(
                rt, job.import_id, actor=actor, skip_invalid=job.skip_invalid, progress=notes)
        finally:
            if notes is not None:
                await notes.close()
    finally:
        await rt.close()
