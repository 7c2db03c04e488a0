"""The merge review's pure rules and the scheduled review: the review day in 2026 and 2027,
the survivor, the surviving values, the comparison, the memory of "not a duplicate", the
duplicate rate, and the monthly job that runs once on its day."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text

from bot.app import RUNTIME, build_runtime
from bot.runtime import Runtime
from config.settings import load_settings
from handlers.customers import convert_lead
from handlers.matching import Group
from handlers.merge_chat import monthly_review, run_review
from handlers.merging import (
    MergeRefused,
    Record,
    apart_from,
    choose_survivor,
    claim_scan,
    compare,
    counted,
    merge_proposal,
    parts_signature,
    percent,
    regroup,
    remembered,
    review_day,
    review_period,
    signature,
    split_proposal,
    surviving_values,
    survivor_basis,
    undo_merge,
    values_to_keep,
)
from scheduler.calendar import CalendarExtra
from storage.db import upgrade_async
from storage.models import (
    Card,
    Customer,
    FollowUp,
    Lead,
    Member,
    Merge,
    MergeProposal,
    MergeScan,
)
from tests.harness import WORKDAY_MORNING, Chat, FrozenClock

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


def _days(first: str, last: str) -> frozenset[date]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return frozenset(start + timedelta(days=n) for n in range((end - start).days + 1))


# ---- the review day -------------------------------------------------------------------------


@pytest.mark.parametrize(("year", "month", "expected"), [
    (2026, 11, date(2026, 11, 5)),  # a Thursday: the 5th itself
    (2026, 12, date(2026, 12, 7)),  # Saturday the 5th: Monday
    (2026, 9, date(2026, 9, 7)),  # Saturday the 5th: Monday
    (2026, 10, date(2026, 10, 8)),  # National Day week (10-01 to 10-07): Thursday 10-08
    (2026, 4, date(2026, 4, 7)),  # Tomb-sweeping Day holiday (04-04 to 04-06): Tuesday
    (2026, 5, date(2026, 5, 6)),  # Labour Day holiday (05-01 to 05-05): Wednesday
])
def test_the_review_day_follows_the_statutory_calendar_of_2026(year, month, expected):
    assert review_day(year, month) == expected


def test_a_2027_review_without_statutory_data_is_the_next_weekday():
    # chinesecalendar 1.11 has no 2027: Monday to Friday applies.
    assert review_day(2027, 6) == date(2027, 6, 7)  # Saturday the 5th: Monday
    assert review_day(2027, 9) == date(2027, 9, 6)  # Sunday the 5th: Monday
    assert review_day(2027, 2) == date(2027, 2, 5)  # a Friday, with no holiday listed


def test_a_2027_review_in_the_admins_listed_holidays_moves_past_them():
    spring_festival = CalendarExtra(holidays=_days("2027-02-05", "2027-02-11"))
    assert review_day(2027, 2, spring_festival) == date(2027, 2, 12)
    national_day = CalendarExtra(holidays=_days("2027-10-01", "2027-10-07"))
    assert review_day(2027, 10, national_day) == date(2027, 10, 8)
    # A make-up working Sunday the admins listed is a review day like any other.
    make_up = CalendarExtra(workdays=frozenset({date(2027, 12, 5)}))
    assert review_day(2027, 12, make_up) == date(2027, 12, 5)
    assert review_day(2027, 12) == date(2027, 12, 6)


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def test_the_review_is_due_from_ten_on_its_day_and_stays_due_that_month():
    assert review_period(_local("2026-10-05 10:00")) is None  # a holiday
    assert review_period(_local("2026-10-08 09:59")) is None
    assert review_period(_local("2026-10-08 10:00")) == "2026-10"
    # The bot was down that morning: the first check afterwards catches up.
    assert review_period(_local("2026-10-20 08:00")) == "2026-10"
    assert review_period(_local("2026-11-02 10:00")) is None  # before November's day


# ---- survivor, surviving values, comparison -------------------------------------------------


def _record(id_: int, *, history: tuple[int, int] = (0, 0), last: datetime | None = None,
            created: datetime = T0, **values) -> Record:
    fields = {"company": "深圳示例科技有限公司", "contact": "张伟", "phone": "13800001234",
              "email": None, "industry": None, "owner_id": None} | values
    return Record(id_, fields, "active", created, history[0], history[1], last)


def test_the_survivor_has_the_most_history_then_the_latest_activity_then_is_oldest():
    busy = _record(3, history=(1, 4))
    quiet = _record(1, history=(1, 1), last=T0 + timedelta(days=30))
    assert choose_survivor([quiet, busy]) == 3
    assert survivor_basis([quiet, busy], 3) == "history"

    recent = _record(4, history=(1, 1), last=T0 + timedelta(days=40))
    assert choose_survivor([quiet, recent]) == 4
    assert survivor_basis([quiet, recent], 4) == "activity"

    older = _record(9, created=T0 - timedelta(days=100))
    newer = _record(2)
    assert choose_survivor([newer, older]) == 9
    assert survivor_basis([newer, older], 9) == "oldest"

    assert choose_survivor([_record(7), _record(5)]) == 5  # all alike: the lowest number
    assert survivor_basis([_record(7), _record(5)], 5) == "number"


def test_the_survivor_keeps_its_values_and_fills_its_empty_fields_from_the_next_best():
    survivor = _record(1, history=(2, 3), owner_id=4, email=" ")
    second = _record(2, history=(1, 1), company="示例科技（深圳）有限公司",
                     email="zhangwei@example.com", owner_id=5)
    third = _record(3, email="zw@example.com", industry="industrial", owner_id=6)
    values = surviving_values([third, second, survivor], 1)
    assert values == {"company": "深圳示例科技有限公司", "contact": "张伟",
                      "phone": "13800001234", "email": "zhangwei@example.com",
                      "industry": "industrial", "owner_id": 4}


def test_at_the_merge_the_proposed_values_stand_and_fill_only_what_they_left_empty():
    proposed = {"company": "深圳示例科技有限公司", "email": None, "industry": ""}
    live = {"company": "示例科技（深圳）有限公司", "email": "zhangwei@example.com",
            "industry": "medical", "owner_id": 4}
    assert values_to_keep(proposed, live) == {
        "company": "深圳示例科技有限公司", "contact": None, "phone": None,
        "email": "zhangwei@example.com", "industry": "medical", "owner_id": 4}


def test_the_comparison_marks_every_field_whose_values_differ():
    records = [_record(1, owner_id=4),
               _record(2, company="示例科技（深圳）有限公司", email="zhangwei@example.com",
                       owner_id=5, contact=" 张伟 ")]
    rows = {row.name: row for row in compare(records, surviving_values(records, 1))}
    assert {name for name, row in rows.items() if row.differs} == {
        "company", "email", "owner_id"}  # "张伟" and " 张伟 " are the same
    assert rows["company"].values == ("深圳示例科技有限公司", "示例科技（深圳）有限公司")
    assert rows["email"].surviving == "zhangwei@example.com"
    assert rows["industry"].differs is False and rows["industry"].surviving is None


# ---- not a duplicate, and the rate ----------------------------------------------------------


def test_a_remembered_group_is_that_group_only_and_a_part_of_it_is_asked_again():
    known = {frozenset({3, 5, 9})}
    assert remembered([9, 3, 5], known) and remembered((3, 5, 9), known)
    assert not remembered([3, 5, 9, 12], known)  # one record more
    assert not remembered([3, 9], known)  # a true pair inside a chain turned down
    assert signature([9, 3, 5]) == signature([3, 5, 9]) != signature([3, 5])
    assert len(signature(range(1, 500))) == 64
    assert parts_signature([[9, 8], [15, 14]]) == parts_signature([[14, 15], [8, 9]])
    assert parts_signature([[8, 9], [14, 15]]) != signature([8, 9, 14, 15])


def test_records_split_apart_are_not_joined_again_even_through_a_new_record():
    # 8/9: one company; 9-14 only a shared switchboard and e-mail; 14/15 another company.
    chain = Group((8, 9, 14, 15), [(8, 9, ["company", "phone"], 99),
                                   (9, 14, ["email", "phone"], 70),
                                   (14, 15, ["company", "email"], 95)])
    apart = apart_from([[[8, 9], [14, 15]]])
    assert apart == {8: {14, 15}, 9: {14, 15}, 14: {8, 9}, 15: {8, 9}}
    assert [(g.customer_ids, g.pairs) for g in regroup(chain, apart)] == [
        ((8, 9), [(8, 9, ["company", "phone"], 99)]),
        ((14, 15), [(14, 15, ["company", "email"], 95)]),
    ]
    # #20 looks like both sides: it joins the side it matches surest, never both.
    bridged = Group((8, 9, 14, 15, 20), [*chain.pairs, (9, 20, ["company", "phone"], 90),
                                         (14, 20, ["email", "phone"], 70)])
    assert [g.customer_ids for g in regroup(bridged, apart)] == [(8, 9, 20), (14, 15)]
    # a split elsewhere leaves the group as it is
    assert regroup(chain, apart_from([[[1], [2]]])) == [chain]


def test_the_rate_counts_each_active_customer_left_in_a_group_once():
    groups = [[1, 2, 3], [4, 5], [6, 7], [8, 9]]
    active = {1, 4, 5, 6, 7, 8, 9, 10}  # 2 and 3 were merged into 1
    assert counted(groups, active) == {4, 5, 6, 7, 8, 9}
    # an undone merge's group sharing records with an open proposal: each counted once
    assert counted([[1, 2], [1, 3], [4, 5]], {1, 2, 3, 4}) == {1, 2, 3}
    assert len(counted(groups, set(range(1, 11)))) == 9
    assert (percent(310, 1000), percent(0, 0), percent(2, 3)) == ("31.0%", "0.0%", "66.7%")


# ---- the monthly job ------------------------------------------------------------------------


async def _seed(rt) -> None:
    chat = Chat(rt)
    people = await chat.add_members({"name": "管理员甲", "role": "admin"},
                                    {"name": "王芳", "role": "rep"})
    async with rt.sessions() as session, session.begin():
        session.add_all([
            Customer(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                     owner_id=people["王芳"].id),
            Customer(company="示例科技（深圳）有限公司", contact="张伟", phone="13800001234"),
            Customer(company="广州另一家贸易有限公司", contact="李娜", phone="13800005678"),
        ])


async def _scans(rt) -> list[tuple[str, str | None, str]]:
    async with rt.sessions() as session:
        rows = await session.execute(
            select(MergeScan.trigger, MergeScan.period, MergeScan.state).order_by(MergeScan.id))
        return [tuple(row) for row in rows.all()]


async def test_the_monthly_review_runs_on_its_day_once_and_cards_the_admins(app_client):
    rt = app_client.app[RUNTIME]
    await _seed(rt)
    rt.clock.now = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)  # Saturday 10:00 in Beijing
    assert await monthly_review(rt) is None
    rt.clock.now = datetime(2026, 12, 7, 1, 59, tzinfo=UTC)  # Monday 09:59
    assert await monthly_review(rt) is None
    assert await _scans(rt) == []

    rt.clock.now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # Monday 10:00
    result = await monthly_review(rt)
    assert result is not None and [p.member_ids for p in result.open] == [[1, 2]]
    assert await _scans(rt) == [("monthly", "2026-12", "done")]
    async with rt.sessions() as session:
        cards = (await session.scalars(select(Card).where(Card.kind == "merge"))).all()
        assert [(c.member_id, c.object_id) for c in cards] == [(1, result.open[0].id)]

    rt.clock.now = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)  # the afternoon, after a restart
    assert await monthly_review(rt) is None
    rt.clock.now = datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
    assert await monthly_review(rt) is None
    async with rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(MergeProposal)) == 1


async def test_a_failed_monthly_review_is_tried_again_the_next_day(app_client, monkeypatch):
    from handlers import merge_chat

    rt = app_client.app[RUNTIME]
    await _seed(rt)

    async def broken(session, *, progress=None):
        raise RuntimeError("matcher down")

    monkeypatch.setattr(merge_chat, "scan_groups", broken)
    rt.clock.now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
    assert await monthly_review(rt) is None
    assert await _scans(rt) == [("monthly", None, "failed")]

    monkeypatch.undo()
    rt.clock.now = datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
    assert (await monthly_review(rt)) is not None
    assert await _scans(rt) == [("monthly", None, "failed"), ("monthly", "2026-12", "done")]


# ---- the database work on SQLite and PostgreSQL ---------------------------------------------


@asynccontextmanager
async def runtime(db_url: str) -> AsyncIterator[Runtime]:
    """A runtime on `db_url` (no app, no workers) with the three customers of _seed."""
    await upgrade_async(db_url)
    rt = build_runtime(load_settings(database={"url": db_url}))
    rt.clock = FrozenClock(WORKDAY_MORNING)
    try:
        await _seed(rt)
        yield rt
    finally:
        await rt.close()


@asynccontextmanager
async def reviewed(db_url: str) -> AsyncIterator[tuple[Runtime, MergeProposal]]:
    """#2 with a lead, a follow-up on it and two interactions, and #1 proposed into it."""
    async with runtime(db_url) as rt:
        async with rt.sessions() as session, session.begin():
            lead = Lead(company="示例科技（深圳）有限公司", contact="张伟", phone="13800001234",
                        customer_id=2, status="converted")
            session.add(lead)
            await session.flush()
            session.add_all([
                FollowUp(lead_id=lead.id, member_id=2, content="报价"),
                FollowUp(customer_id=2, member_id=2, kind="interaction", content="回访"),
                FollowUp(customer_id=2, member_id=2, kind="interaction", content="投诉"),
            ])
            (await session.get(Customer, 2)).email = "zhangwei@example.com"
            scan = await claim_scan(session, rt.now(), trigger="command")
        [proposal] = (await run_review(rt, scan.id)).open
        yield rt, proposal


async def _state(rt: Runtime) -> tuple[list[tuple], list[tuple], list[tuple]]:
    async with rt.sessions() as session:
        customers = await session.execute(
            select(Customer.id, Customer.email, Customer.owner_id, Customer.status,
                   Customer.merged_into_id).order_by(Customer.id))
        leads = await session.execute(select(Lead.id, Lead.customer_id).order_by(Lead.id))
        notes = await session.execute(
            select(FollowUp.id, FollowUp.customer_id).order_by(FollowUp.id))
        return ([tuple(r) for r in customers.all()], [tuple(r) for r in leads.all()],
                [tuple(r) for r in notes.all()])


async def test_a_merge_and_its_undo_on_each_database(db_url):
    async with reviewed(db_url) as (rt, proposal):
        assert (proposal.member_ids, proposal.survivor_id) == ([1, 2], 2)  # #2 has history
        before = await _state(rt)
        async with rt.sessions() as session, session.begin():
            admin = await session.get(Member, 1)
            merge = await merge_proposal(session, await session.get(MergeProposal, proposal.id),
                                         admin, rt.now(), lock=not rt.is_sqlite)
        assert merge.moved == {"leads": [], "follow_ups": []}  # everything was on #2 already
        assert merge.survivor_before == {"owner_id": None}  # #1's owner 王芳 fills it
        customers, _, _ = await _state(rt)
        assert customers[:2] == [(1, None, 2, "merged", 2),
                                 (2, "zhangwei@example.com", 2, "active", None)]
        async with rt.sessions() as session, session.begin():
            kept = await undo_merge(session, await session.get(Merge, merge.id),
                                    await session.get(Member, 1), rt.now(),
                                    lock=not rt.is_sqlite)
        assert kept == [] and await _state(rt) == before


async def test_a_split_and_the_next_scan_on_each_database(db_url):
    async with runtime(db_url) as rt:
        desk = "front@hub.example"
        async with rt.sessions() as session, session.begin():
            session.add_all([  # #4-#7: two companies chained by #5 and #6's front desk
                Customer(company="深圳星河示例电子有限公司", contact="陈明", phone="13800000801"),
                Customer(company="星河示例电子（深圳）有限公司", contact="林静",
                         phone="13800000801", email=desk),
                Customer(company="广州远帆示例物流有限公司", contact="刘洋", phone="13800000801",
                         email=desk),
                Customer(company="远帆示例物流（广州）有限公司", contact="刘洋",
                         phone="13800000902", email=desk),
            ])
            scan = await claim_scan(session, rt.now(), trigger="command")
        first = await run_review(rt, scan.id)
        assert sorted(p.member_ids for p in first.open) == [[1, 2], [4, 5, 6, 7]]
        chain = next(p for p in first.open if len(p.member_ids) == 4)

        async with rt.sessions() as session, session.begin():
            done = await split_proposal(session, await session.get(MergeProposal, chain.id),
                                        [7, 6], await session.get(Member, 1), rt.now())
            assert (done.rest, done.split) == ([4, 5], [6, 7])
            assert [p.member_ids for p in done.new] == [[4, 5], [6, 7]]
        with pytest.raises(MergeRefused) as refused:
            async with rt.sessions() as session, session.begin():
                await split_proposal(session, await session.get(MergeProposal, chain.id), [6],
                                     await session.get(Member, 1), rt.now())
        assert refused.value.reason == "decided"  # split already: nothing changed
        async with rt.sessions() as session, session.begin():
            scan = await claim_scan(session, rt.now(), trigger="command")
        second = await run_review(rt, scan.id)
        assert sorted(p.member_ids for p in second.open) == [[1, 2], [4, 5], [6, 7]]
        assert second.new == 0


@pytest.mark.postgres
async def test_two_admins_tapping_merge_at_once_merge_once(pg_url):
    async with reviewed(pg_url) as (rt, proposal):
        both_read = asyncio.Barrier(2)

        async def tap() -> str:
            async with rt.sessions() as session, session.begin():
                admin = await session.get(Member, 1)
                mine = await session.get(MergeProposal, proposal.id)
                assert mine.state == "proposed"
                await both_read.wait()  # both have seen the proposal open
                try:
                    await merge_proposal(session, mine, admin, rt.now(), lock=True)
                except MergeRefused as refused:
                    return refused.reason
                await asyncio.sleep(0.2)  # hold the locks a moment: the other one waits
                return "merged"

        assert sorted(await asyncio.gather(tap(), tap())) == ["changed", "merged"]
        async with rt.sessions() as session:
            assert len((await session.scalars(select(Merge))).all()) == 1


async def test_the_scans_reading_session_holds_up_no_write_and_writes_nothing(sqlite_url):
    async with runtime(sqlite_url) as rt, rt.sessions.reading() as reader:
        assert await reader.scalar(select(func.count()).select_from(Customer)) == 3
        # Inside the read, another task writes at once and commits.
        async with asyncio.timeout(2), rt.sessions() as session, session.begin():
            session.add(Customer(company="新客户", contact="王五"))
        # The reader keeps its snapshot, and may not write.
        assert await reader.scalar(select(func.count()).select_from(Customer)) == 3
        with pytest.raises(Exception, match="readonly"):
            await reader.execute(text("DELETE FROM customers"))
        async with rt.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Customer)) == 4


async def test_a_lead_matching_a_merged_away_record_is_linked_to_the_survivor(sqlite_url):
    async with reviewed(sqlite_url) as (rt, proposal):
        async with rt.sessions() as session, session.begin():
            admin, rep = await session.get(Member, 1), await session.get(Member, 2)
            await merge_proposal(session, await session.get(MergeProposal, proposal.id),
                                 admin, rt.now())
            # The same people again, under #1's company name (merged away into #2).
            lead = Lead(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                        status="contacted", assignee_id=rep.id)
            session.add(lead)
            await session.flush()
            customer, created = await convert_lead(session, lead, rt.now(), owner=rep,
                                                   actor=admin)
        assert (customer.id, created, lead.customer_id) == (2, False, 2)
