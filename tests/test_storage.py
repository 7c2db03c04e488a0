"""Storage on SQLite and PostgreSQL: migrations, the inbox's idempotency, UTC times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import func, select

from bot.app import build_runtime
from bot.events import Event, Location
from config.settings import load_settings
from storage.db import upgrade_async
from storage.models import InboundEvent, Lead


async def _rt(db_url):
    await upgrade_async(db_url)
    return build_runtime(load_settings(database={"url": db_url}))


async def test_migrations_apply_twice_without_harm(db_url):
    await upgrade_async(db_url)
    await upgrade_async(db_url)


async def test_repeated_deliveries_are_recorded_once_across_processes(db_url):
    one, two = await _rt(db_url), await _rt(db_url)
    for rt in (one, two):
        rt.inbox.start()
    event = Event(channel="wecom", kind="text", sender="zhangsan", key="7380000000000000001",
                  text="记录 已报价")
    results = await asyncio.gather(*(rt.inbox.record(event) for rt in (one, two, one, two)))
    assert sorted(results) == [False, False, False, True]
    other = Event(channel="wecom", kind="text", sender="zhangsan", key="7380000000000000002")
    assert await one.inbox.record(other) is True
    async with one.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(InboundEvent))
    assert count == 2
    for rt in (one, two):
        await rt.inbox.stop()
        await rt.close()


async def test_an_unprocessed_event_is_recovered_after_a_restart(db_url):
    rt = await _rt(db_url)
    event = Event(channel="console", kind="location", sender="王芳", key="k1",
                  location=Location(22.540383, 114.063014, label="示例路1号"))
    rt.inbox.start(workers=False)  # it dies before a worker picks the event up
    assert await rt.inbox.record(event) is True
    await rt.inbox.stop()
    await rt.close()
    again = await _rt(db_url)
    assert await again.inbox.recover() == 1
    [(record_id, recovered)] = [q.get_nowait() for q in again.inbox._work if q.qsize()]
    assert recovered == event
    await again.close()


async def test_times_are_stored_as_utc(db_url):
    rt = await _rt(db_url)
    beijing = timezone(timedelta(hours=8))
    async with rt.sessions() as session, session.begin():
        lead = Lead(company="示例", contact="张伟", created_at=datetime(2026, 12, 2, 10, 0,
                                                                  tzinfo=beijing))
        session.add(lead)
    async with rt.sessions() as session:
        stored = await session.scalar(select(Lead.created_at))
    assert stored == datetime(2026, 12, 2, 2, 0, tzinfo=UTC) and stored.tzinfo is not None
    await rt.close()
