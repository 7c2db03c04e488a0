"""Fixtures: settings on a temporary SQLite file (or PostgreSQL), the app, the chat."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from bot.app import RUNTIME, build_runtime, create_app
from config.settings import Settings, load_settings
from storage.db import upgrade
from tests.harness import WORKDAY_MORNING, Chat, FrozenClock

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/salesbot.db"


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not _pg_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL must be reachable at 127.0.0.1:5432 in CI")
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432 on this machine")
    import asyncio

    import asyncpg

    name = f"salesbot_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


def make_settings(db_url: str, **overrides) -> Settings:
    upgrade(db_url)
    return load_settings(database={"url": db_url}, **overrides)


@pytest.fixture
def settings(sqlite_url) -> Settings:
    return make_settings(sqlite_url)


@pytest.fixture
async def app_client(aiohttp_client, settings):
    """The real app with its background workers, on a test server; the clock frozen."""
    rt = build_runtime(settings)
    rt.clock = FrozenClock(WORKDAY_MORNING)
    app = create_app(settings, rt)
    client = await aiohttp_client(app)
    return client


@pytest.fixture
async def chat(app_client) -> AsyncIterator[Chat]:
    yield Chat(app_client.app[RUNTIME])


@pytest.fixture
async def fake():
    """The fake WeCom on loopback (a DingTalk test module defines its own `fake`)."""
    from tests.fakes.wecom import FakeWeCom

    fake = FakeWeCom()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(aiohttp_client, sqlite_url, fake):
    """The real app with its WeCom channel on `fake`; the outbox is run by hand."""
    from tests.fakes.wecom import start_bot

    return await start_bot(aiohttp_client, sqlite_url, fake)
