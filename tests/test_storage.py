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


async def test_a_database_with_data_from_the_first_release_upgrades_intact(db_url):
    """Rebuilding `leads` on SQLite must not trip over the rows that point at it."""
    from sqlalchemy import text

    from storage.db import create_engine, upgrade

    await asyncio.to_thread(upgrade, db_url, "0001")
    engine = create_engine(db_url)
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO members (id, name, role, status, industries, created_at, updated_at)"
            " VALUES (1, '王芳', 'rep', 'active', '[]', :now, :now)"), {"now": now})
        await conn.execute(text(
            "INSERT INTO leads (id, company, contact, phone, status, assignee_id, origin,"
            " reroutes, created_at, updated_at) VALUES (1, '深圳示例科技有限公司', '张伟',"
            " '13800001234', 'accepted', 1, 'api', 0, :now, :now)"), {"now": now})
        await conn.execute(text(
            "INSERT INTO assignments (id, lead_id, member_id, state, method, offered_at)"
            " VALUES (1, 1, 1, 'accepted', 'round_robin', :now)"), {"now": now})
        await conn.execute(text(
            "INSERT INTO follow_ups (id, lead_id, member_id, kind, content, at)"
            " VALUES (1, 1, 1, 'note', '电话沟通', :now)"), {"now": now})
        await conn.execute(text(
            "INSERT INTO lead_status_changes (id, lead_id, to_status, at)"
            " VALUES (1, 1, 'accepted', :now)"), {"now": now})
    await engine.dispose()

    await upgrade_async(db_url)

    engine = create_engine(db_url)
    async with engine.connect() as conn:
        lead = (await conn.execute(text(
            "SELECT company, assignee_id, pool_returns, customer_id FROM leads"))).one()
        notes = (await conn.execute(text("SELECT count(*) FROM follow_ups"))).scalar()
    await engine.dispose()
    assert tuple(lead) == ("深圳示例科技有限公司", 1, 0, None) and notes == 1


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


async def test_a_callback_is_journaled_and_acked_while_another_process_writes(sqlite_url):
    """An import publishing 50,000 leads holds SQLite's one write lock for a while: the
    callbacks of that moment are kept in the journal, acked, and written right after."""
    import json
    import sqlite3
    import time
    from pathlib import Path

    from bot.inbox import JOURNAL_AFTER

    rt = await _rt(sqlite_url)
    rt.inbox.start(workers=False)
    path = sqlite_url.split("///", 1)[1]
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the other process's long write
    events = [Event(channel="wecom", kind="text", sender=f"rep{n}", key=f"73800000000{n}",
                    text="你好") for n in range(3)]

    began = time.monotonic()
    first = await rt.inbox.record(events[0])
    rest = await asyncio.gather(*(rt.inbox.record(e) for e in events[1:]))
    acked_in = time.monotonic() - began

    assert [first, *rest] == [True, True, True]
    assert acked_in < JOURNAL_AFTER + 1.0
    [journal] = list(Path(path).parent.glob("salesbot.db.inbox-*.journal"))
    kept = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert sorted(kept) == sorted(e.key for e in events)
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)
    reader.close()  # not in the database yet: the lock is held

    other.execute("COMMIT")
    for _ in range(100):
        if await _count(rt) == 3 and not journal.exists():
            break
        await asyncio.sleep(0.05)
    assert await _count(rt) == 3 and not journal.exists()
    assert sum(q.qsize() for q in rt.inbox._work) == 3  # each handed to a worker once
    other.close()
    await rt.inbox.stop()
    await rt.close()


async def test_a_journal_left_by_a_dead_process_is_written_at_the_next_start(sqlite_url):
    import json
    from pathlib import Path

    rt = await _rt(sqlite_url)
    rt.inbox.start()
    known = Event(channel="wecom", kind="text", sender="王芳", key="7380000000000000009")
    assert await rt.inbox.record(known) is True
    await rt.inbox.drain()  # recorded and processed
    await rt.inbox.stop()
    await rt.close()
    # Killed after acking two callbacks it had only journaled, one of them a repeat.
    fresh = Event(channel="wecom", kind="text", sender="王芳", key="7380000000000000010",
                  text="记录 已报价")
    folder = Path(sqlite_url.split("///", 1)[1]).parent
    dead = folder / "salesbot.db.inbox-99999999-0a0b0c0d.journal"
    dead.write_text("".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n"
                            for e in (known, fresh)), encoding="utf-8")

    again = await _rt(sqlite_url)
    again.inbox.start(workers=False)
    assert await again.inbox.recover() == 1  # the journaled one, not yet processed
    [(_, recovered)] = [q.get_nowait() for q in again.inbox._work if q.qsize()]
    assert recovered == fresh
    assert not dead.exists() and await _count(again) == 2
    await again.inbox.stop()
    await again.close()


async def _count(rt) -> int:
    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(InboundEvent))
