"""Engine, sessions and migrations: SQLite (WAL, one writer) or PostgreSQL (asyncpg).

Owns connecting and upgrading the database; it knows nothing of leads or members.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


BUSY_TIMEOUT_MS = 5000  # how long a reading connection's statement may wait
# A writing connection's statements run inside BEGIN IMMEDIATE (the lock is held): only
# BEGIN itself waits, and it polls (_sqlite_begin).
WRITER_BUSY_MS = 1
CACHE_KIB = 32 * 1024  # a connection's page cache, at most


def _sqlite_pragmas(  # noqa: ANN001
    dbapi_conn, _record, foreign_keys: bool = True, busy_ms: int = BUSY_TIMEOUT_MS
) -> None:
    # We issue BEGIN ourselves (below), so that every transaction takes the write lock
    # up front: a deferred one that later writes fails at once when another process
    # wrote in between, where BEGIN IMMEDIATE waits for busy_timeout instead.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    # SQLite's default cache is 2 MB: an import writing 50,000 leads (a dozen indexes)
    # spent half its one publishing step re-reading index pages.
    cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    cursor.close()


# Waiting for another process's write lock. SQLite's own busy handler sleeps longer and
# longer between tries (100 ms each after the first third of a second), so a writer that
# leaves the lock free for a few milliseconds is rarely seen by one that waits: the
# import's batches and the server's callbacks starve each other. BEGIN polls instead,
# every BUSY_POLL, without holding up the event loop.
BUSY_POLL = 0.002
BUSY_WAIT = 30.0


def _sqlite_begin(conn) -> None:  # noqa: ANN001 - SQLAlchemy Connection
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except exc.OperationalError as error:
            if not _locked(error) or time.monotonic() > deadline:
                raise
        try:
            await_only(asyncio.sleep(BUSY_POLL))
        except exc.MissingGreenlet:
            # Not under the async bridge (a plain engine): SQLite's own handler waits.
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={WRITER_BUSY_MS}")
            return


def _locked(error: exc.OperationalError) -> bool:
    return "database is locked" in str(error.orig)


def _sqlite_read_only(dbapi_conn, _record) -> None:  # noqa: ANN001
    _sqlite_pragmas(dbapi_conn, _record)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_begin_read(conn) -> None:  # noqa: ANN001 - SQLAlchemy Connection
    # Deferred: in WAL mode a read transaction sees one snapshot and blocks no writer.
    conn.exec_driver_sql("BEGIN")


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, foreign_keys: bool = True) -> AsyncEngine:
    """The engine for `url`. Migrations pass foreign_keys=False on SQLite: a batch
    migration rebuilds a table by copy, drop and rename, which the foreign keys of
    the rows pointing at it would refuse (they are checked after the migration)."""
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect",
                     functools.partial(_sqlite_pragmas, foreign_keys=foreign_keys,
                                       busy_ms=WRITER_BUSY_MS))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    else:
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    return engine


class TurnLock:
    """An asyncio lock whose urgent waiters go first (recording a callback before it is
    acknowledged must not queue behind background work)."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool = False) -> None:
        if not self._held and not self._urgent and not self._normal:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._normal).append(waiter)
        try:
            await waiter  # ownership is handed over by release()
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            else:
                (self._urgent if urgent else self._normal).remove(waiter)
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._held = False


class Sessions:
    """Opens sessions; on SQLite one at a time per process, since SQLite has one writer.

    Waiting on an asyncio lock costs nothing, where SQLite's own busy handler sleeps up
    to 100 ms between tries. A session must not be opened while the same task holds one.
    A long read (the monthly duplicate scan) takes a `reading()` session instead.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.factory = async_sessionmaker(engine, expire_on_commit=False)
        self._lock = TurnLock() if engine.dialect.name == "sqlite" else None
        self._holder: asyncio.Task[object] | None = None
        self._engine = engine
        self._reader: AsyncEngine | None = None

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for a long read that must not hold up the bot's writes.

        On SQLite it comes from a second engine whose connections may not write (query_only)
        and begin a deferred transaction: a snapshot of the database (WAL) that takes
        neither the process's turn nor SQLite's write lock, so callbacks keep being
        recorded while it reads. On PostgreSQL it is an ordinary session.
        """
        if self._lock is None:
            async with self.factory() as session:
                yield session
            return
        if self._reader is None:
            self._reader = create_async_engine(self._engine.url, connect_args={"timeout": 30})
            event.listen(self._reader.sync_engine, "connect", _sqlite_read_only)
            event.listen(self._reader.sync_engine, "begin", _sqlite_begin_read)
        async with AsyncSession(self._reader, expire_on_commit=False) as session:
            yield session

    async def dispose(self) -> None:
        if self._reader is not None:
            await self._reader.dispose()
            self._reader = None

    @asynccontextmanager
    async def __call__(self, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        if self._lock is None:
            async with self.factory() as session:
                yield session
            return
        task = asyncio.current_task()
        if task is not None and task is self._holder:
            raise RuntimeError("nested database session in one task (SQLite would deadlock)")
        await self._lock.acquire(urgent)
        self._holder = task
        try:
            async with self.factory() as session:
                yield session
        finally:
            self._holder = None
            self._lock.release()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations (blocking: call it before the loop starts, or in a thread)."""
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str) -> None:
    await asyncio.to_thread(upgrade, url)


def check_current(url: str) -> str | None:
    """None when the database is at the newest migration, else what to do about it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()

    async def _current() -> str | None:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
        finally:
            await engine.dispose()

    current = asyncio.run(_current())
    if current != head:
        return f"database is at revision {current}, not {head}: run 'salesbot db upgrade'"
    return None
