"""Alembic environment: runs the migrations on the async engine of the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from storage.db import create_engine
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: "
                           f"{broken[:5]}")


async def _online() -> None:
    # Foreign keys off on SQLite while tables are rebuilt; checked before the commit.
    engine = create_engine(config.get_main_option("sqlalchemy.url"), foreign_keys=False)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.run_sync(_check_foreign_keys)
        await connection.commit()
    await engine.dispose()


def _in_new_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_online())
        return
    raise RuntimeError("run the migrations outside the event loop (storage.db.upgrade_async)")


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: give a database URL")
_in_new_loop()
