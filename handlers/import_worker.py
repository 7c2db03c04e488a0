"""Chat imports run in a process of their own, so the server keeps its deadlines.

Reading a workbook and checking 50,000 rows is a minute of Python work. In a thread of
the server it competes with the event loop for the interpreter lock and every callback
waits behind it; in its own process it competes only for a core, as `salesbot leads
import` does, and its memory is returned when it ends. The worker opens the same database
with its own Runtime (channels built, not started): what it has to say (progress notes,
digests) goes into the outbox, which the server delivers.

One process per job: it ends when its job is done. It holds only the sending end of a
one-way pipe, so a server that is gone (killed, or shutting down) is a failed send, and
the worker tells the member itself; the server holds only the receiving end, so a
worker that dies is an end of file, never an endless wait.

The worker reads the server's clock: the system clock when the server runs on it, else
the server's reading when the job began (a server on a frozen clock gets a worker frozen
at the same moment).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from bot.runtime import Runtime
    from config.settings import Settings
    from handlers.lead_import import ImportOptions, ImportReport

log = logging.getLogger(__name__)

# Imports checked or written at once on one server; the next waits its turn.
WORKERS = 1
# How long the server waits for a worker that has sent its result to end.
JOIN_SECONDS = 10.0
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
    # A spooled upload to check instead of `data`: the worker reads it, then deletes it.
    path: str | None = None
    filename: str = ""
    options: ImportOptions | None = None
    origin: str = "chat"
    skip_invalid: bool = True
    channel: str | None = None  # where the member asked: a result the server missed goes there


class WorkerDied(RuntimeError):
    """The worker process ended without a result (killed, out of memory)."""


async def check(rt: Runtime, source: bytes | Path, filename: str, options: ImportOptions, *,
                actor_id: int | None, origin: str, notes: Notes | None,
                channel: str | None = None) -> ImportReport:
    """check_import in a worker process, of the file's bytes or of a spooled file (which
    the worker deletes once read)."""
    data, path = (source, None) if isinstance(source, bytes) else (b"", str(source))
    return await _run(rt, Job("check", portable(rt.settings), _now(rt), actor_id, notes,
                              data=data, path=path, filename=filename, options=options,
                              origin=origin, channel=channel))


async def publish(rt: Runtime, import_id: int, *, actor_id: int | None, skip_invalid: bool,
                  notes: Notes | None, channel: str | None = None) -> ImportReport:
    """publish_import in a worker process."""
    return await _run(rt, Job("publish", portable(rt.settings), _now(rt), actor_id, notes,
                              import_id=import_id, skip_invalid=skip_invalid,
                              channel=channel))


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
    """The job in a process of its own, one job per process.

    The worker holds only the sending end of a one-way pipe: when the server stops
    listening (it was killed, or it is shutting down) the worker's send fails, and the
    worker ends after telling the member itself. The server holds only the receiving
    end: a worker that dies is an end of file here, never a wait without end.
    """
    turn = _turns.setdefault(id(rt), asyncio.Semaphore(WORKERS))
    async with turn:
        # A fresh interpreter each time ("spawn"): forking a server with threads running
        # copies locks in whatever state they are, and the memory goes back at the end.
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=work, args=(job, send),
                                  name=f"salesbot-import-{job.kind}")
        try:
            process.start()
        finally:
            send.close()
        try:
            await _readable(receive.fileno())
            try:
                # The worker writes its whole result at once: reading it takes no wait.
                ok, value = await asyncio.to_thread(receive.recv)
            except EOFError:
                await asyncio.to_thread(process.join, JOIN_SECONDS)
                raise WorkerDied(f"the import worker ended with {process.exitcode} "
                                 "and no result") from None
        finally:
            receive.close()
        await asyncio.to_thread(process.join, JOIN_SECONDS)
    if not ok:
        raise value
    return value


async def _readable(fd: int) -> None:
    """Until the pipe has data or its end (the worker's side closed)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def work(job: Job, send: Connection) -> None:
    """The worker's side (module level, so the process can pickle a reference to it):
    the job, its result sent to the server; when nobody receives it, the member is told
    from here (the card and the summary the server would have sent), and the process
    ends either way."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    outcome: tuple[bool, Any]
    try:
        outcome = (True, asyncio.run(_work(job)))
    except Exception as exc:
        outcome = (False, _portable(exc))
    try:
        send.send(outcome)
    except OSError:  # BrokenPipeError: the server is gone or no longer waiting
        log.warning("import worker: the server did not take the result; "
                    "telling the member from here")
        asyncio.run(_follow_up(job, outcome))
    finally:
        send.close()


def _portable(exc: Exception) -> Exception:
    """The exception as the server can unpickle it (the core's carry a Chinese message)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _runtime(job: Job) -> Runtime:
    from bot.app import build_runtime

    rt = build_runtime(job.settings)
    if job.now is not None:
        frozen = job.now
        rt.clock = lambda: frozen
    return rt


async def _work(job: Job) -> ImportReport:
    from handlers import lead_import
    from handlers.import_chat import ProgressNotes
    from storage.models import Member

    data = job.data
    if job.path is not None:
        data = Path(job.path).read_bytes()
        os.unlink(job.path)  # the spooled upload is ours once read
    rt = _runtime(job)
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
                    rt, data, job.filename, job.options, actor=actor, origin=job.origin,
                    progress=notes)
            assert job.import_id is not None
            return await lead_import.publish_import(
                rt, job.import_id, actor=actor, skip_invalid=job.skip_invalid, progress=notes)
        finally:
            if notes is not None:
                await notes.close()
    finally:
        await rt.close()


async def _follow_up(job: Job, outcome: tuple[bool, Any]) -> None:
    """What the server does with a result, done by the worker that could not deliver it."""
    from handlers import import_chat

    if job.actor_id is None or job.origin != "chat":
        return
    ok, value = outcome
    rt = _runtime(job)
    try:
        if job.kind == "check":
            if ok:
                await import_chat.check_done(rt, job.actor_id, value, job.filename,
                                             job.channel)
            else:
                await import_chat.check_failed(rt, job.actor_id, job.filename, job.channel,
                                               value)
        else:
            assert job.import_id is not None
            if ok:
                await import_chat.publish_done(rt, job.import_id, job.actor_id, job.channel,
                                               value)
            else:
                await import_chat.publish_failed(rt, job.import_id, job.actor_id,
                                                 job.channel, value)
    except Exception:
        log.exception("import worker: the member could not be told of import %s",
                      job.import_id)
    finally:
        await rt.close()
