"""The runner role: exactly one process runs the scheduled jobs on a shared database.

It owns the lock (a PostgreSQL advisory lock, or a file lock next to the SQLite file);
it does not know what the jobs are. APScheduler 3 cannot share a job store between
processes, so the others wait and take over when the holder goes away.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import zlib
from pathlib import Path
from typing import Protocol

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# One key for the whole product; advisory locks are scoped to the current database.
ADVISORY_KEY = zlib.crc32(b"salesbot.scheduler.runner")
CONNECT_TIMEOUT = 10.0
PING_TIMEOUT = 5.0
_PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class RunnerLock(Protocol):
    async def try_acquire(self) -> bool: ...

    async def still_held(self) -> bool: ...

    async def release(self) -> None: ...


class AdvisoryLock:
    """pg_try_advisory_lock on a dedicated connection: the server frees it when the
    connection dies, so a crashed holder never blocks the others."""

    def __init__(self, url: str, key: int = ADVISORY_KEY) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._dsn = parsed.render_as_string(hide_password=False)
        self._key = key
        self.connection: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        try:
            if self.connection is None or self.connection.is_closed():
                self.connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            got = await self.connection.fetchval(
                "SELECT pg_try_advisory_lock($1)", self._key, timeout=PING_TIMEOUT
            )
        except _PG_ERRORS as exc:
            log.warning("runner lock: database unreachable: %s", type(exc).__name__)
            await self._drop()
            return False
        if not got:
            # Keep no idle connection open while another process is the runner.
            await self._drop()
        return bool(got)

    async def still_held(self) -> bool:
        if self.connection is None or self.connection.is_closed():
            return False
        try:
            await self.connection.fetchval("SELECT 1", timeout=PING_TIMEOUT)
        except _PG_ERRORS as exc:
            log.warning("runner lock: connection lost: %s", type(exc).__name__)
            await self._drop()
            return False
        return True

    async def release(self) -> None:
        if self.connection is not None and not self.connection.is_closed():
            try:
                await self.connection.fetchval(
                    "SELECT pg_advisory_unlock($1)", self._key, timeout=PING_TIMEOUT
                )
            except _PG_ERRORS:
                pass  # closing the connection below frees the lock anyway
        await self._drop()

    async def _drop(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), PING_TIMEOUT)
            except _PG_ERRORS:
                connection.terminate()


class FileLock:
    """An exclusive flock on a file next to the SQLite database; the kernel frees it when
    the holding process exits, however it exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class SoloLock:
    """An in-memory SQLite database belongs to one process: that process is the runner."""

    def __init__(self) -> None:
        self._held = False

    async def try_acquire(self) -> bool:
        self._held = True
        return True

    async def still_held(self) -> bool:
        return self._held

    async def release(self) -> None:
        self._held = False


def lock_for(url: str) -> RunnerLock:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return AdvisoryLock(url)
    if parsed.database in (None, "", ":memory:"):
        return SoloLock()
    return FileLock(Path(parsed.database).with_name(Path(parsed.database).name + ".runner.lock"))
