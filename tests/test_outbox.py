"""The outbox: budgets, digests, retries, crash recovery and exactly-once claiming."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.app import build_runtime
from bot.channels.base import Budget, Delivery
from bot.outbox import enqueue, plan_recipient
from config.settings import load_settings
from storage.db import upgrade_async
from storage.models import Member, Outgoing
from tests.harness import WORKDAY_MORNING, FrozenClock

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def _row(n: int, kind: str = "text") -> Outgoing:
    return Outgoing(id=n, kind=kind, payload={"text": f"消息{n}"}, channel="x", recipient="m")


def test_within_budget_everything_goes():
    rows = [_row(1), _row(2, "card")]
    plan = plan_recipient(rows, 0, 0, Budget(25, 900), NOW, None, None)
    assert [r.id for r in plan.send] == [1, 2] and plan.digest == [] and plan.wait_until is None


def test_past_the_budget_texts_fold_and_cards_wait():
    rows = [_row(1), _row(2), _row(3, "card"), _row(4), _row(5, "card")]
    oldest = NOW - timedelta(seconds=40)
    plan = plan_recipient(rows, 23, 100, Budget(25, 900), NOW, oldest, oldest)
    assert [r.id for r in plan.digest] == [1, 2, 4]
    assert [r.id for r in plan.send] == [3]
    assert plan.wait_until == oldest + timedelta(minutes=1, seconds=1)


def test_a_full_hour_waits_for_the_hour_window():
    oldest_hour = NOW - timedelta(minutes=50)
    plan = plan_recipient([_row(1, "card")], 3, 900, Budget(25, 900), NOW, None, oldest_hour)
    assert plan.send == [] and plan.wait_until == oldest_hour + timedelta(hours=1, seconds=1)


def test_card_updates_do_not_count_against_the_budget():
    plan = plan_recipient([_row(1, "card_update")], 25, 0, Budget(25, 900), NOW, NOW, NOW)
    assert [r.id for r in plan.send] == [1]


class RecordingChannel:
    """A channel that records what it delivers and can fail on demand."""

    name = "console"
    budget = Budget(3, None)
    group_budget = Budget(None, None)

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.fail_next: list[Delivery] = []

    def address_of(self, member):
        return member.name

    def group_address(self, team):
        return None

    def add_routes(self, app):
        return None

    async def start(self, app):
        return None

    async def stop(self):
        return None

    async def deliver(self, parcel):
        if self.fail_next:
            return self.fail_next.pop(0)
        self.delivered.append((parcel.address, parcel.payload.get("text", parcel.kind)))
        return Delivery.sent()


async def _runtime(db_url):
    await upgrade_async(db_url)
    rt = build_runtime(load_settings(database={"url": db_url}))
    rt.clock = FrozenClock(WORKDAY_MORNING)
    channel = RecordingChannel()
    rt.channels["console"] = channel
    async with rt.sessions() as session, session.begin():
        session.add(Member(name="王芳", role="rep", status="active", industries=[]))
    return rt, channel


async def _queue(rt, texts):
    async with rt.sessions() as session, session.begin():
        member = await session.scalar(select(Member))
        for text in texts:
            await enqueue(session, rt, member, text)


async def test_a_burst_folds_into_a_digest_and_nothing_is_lost(sqlite_url):
    rt, channel = await _runtime(sqlite_url)
    await _queue(rt, [f"第{n}条" for n in range(10)])
    await rt.outbox.run_once()
    assert len(channel.delivered) == 1
    digest = channel.delivered[0][1]
    assert digest.startswith("【消息汇总】您有 10 条新消息：")
    assert all(f"第{n}条" in digest for n in range(10))
    async with rt.sessions() as session:
        states = dict((await session.execute(
            select(Outgoing.state, func.count()).group_by(Outgoing.state))).all())
    assert states == {"sent": 1, "folded": 9}
    await rt.close()


async def test_rate_limited_delivery_is_retried_with_backoff(sqlite_url):
    rt, channel = await _runtime(sqlite_url)
    channel.fail_next = [Delivery.retry("45009 rate limit", 60)]
    await _queue(rt, ["你好"])
    await rt.outbox.run_once()
    assert channel.delivered == []
    async with rt.sessions() as session:
        row = await session.scalar(select(Outgoing))
    assert row.state == "pending" and row.attempts == 1 and row.last_error == "45009 rate limit"
    assert row.next_at >= WORKDAY_MORNING + timedelta(seconds=60)
    rt.clock.advance(seconds=80)
    await rt.outbox.run_once()
    assert channel.delivered == [("王芳", "你好")]
    await rt.close()


async def test_a_message_that_keeps_failing_is_kept_as_failed_and_counted(sqlite_url):
    rt, channel = await _runtime(sqlite_url)
    channel.fail_next = [Delivery.failed("81013 user invalid")]
    await _queue(rt, ["你好"])
    await rt.outbox.run_once()
    async with rt.sessions() as session:
        row = await session.scalar(select(Outgoing))
    assert (row.state, row.last_error) == ("failed", "81013 user invalid")
    assert b'salesbot_outbox_failed_total{channel="console"} 1.0' in rt.metrics.render()
    await rt.close()


async def test_a_crash_after_claiming_is_delivered_after_restart(sqlite_url):
    rt, channel = await _runtime(sqlite_url)
    await _queue(rt, ["重要通知"])
    claimed = await rt.outbox._claim()  # the process dies right after claiming
    assert len(claimed) == 1
    await rt.close()
    rt2, channel2 = await _runtime_again(sqlite_url)
    rt2.clock.advance(minutes=3)
    await rt2.outbox.run_once()
    assert channel2.delivered == [("王芳", "重要通知")]
    await rt2.close()


async def _runtime_again(db_url):
    rt = build_runtime(load_settings(database={"url": db_url}))
    rt.clock = FrozenClock(WORKDAY_MORNING)
    channel = RecordingChannel()
    rt.channels["console"] = channel
    return rt, channel


@pytest.mark.postgres
async def test_two_processes_claim_each_row_once_on_postgres(pg_url):
    rt1, ch1 = await _runtime(pg_url)
    rt2, ch2 = await _runtime_again(pg_url)
    for rt in (rt1, rt2):
        rt.channels["console"].budget = Budget(None, None)
    await _queue(rt1, [f"消息{n}" for n in range(120)])
    for _ in range(6):
        await asyncio.gather(rt1.outbox.run_once(), rt2.outbox.run_once())
    texts = [t for _, t in ch1.delivered + ch2.delivered]
    assert sorted(texts) == sorted(f"消息{n}" for n in range(120))
    assert ch1.delivered and ch2.delivered
    await rt1.close()
    await rt2.close()
