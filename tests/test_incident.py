"""The outage our users told us about, replayed: a "-" in the roster, the engine off,
2,000 leads in a morning. Nobody may be buried, nothing may land on a manager or admin,
the admins hear once, and the queue empties by itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import String, case, cast, func, literal, select

from bot.channels.base import Budget
from handlers.intake import LeadInput, create_leads
from handlers.roster import import_roster_rows
from scheduler.sweeps import sweep_once
from storage.models import Alert, Lead, Member, Outgoing

REPS = [f"销售{n}" for n in range(1, 9)]
ROSTER = [
    {"name": "管理员甲", "role": "admin"},
    {"name": "李经理", "role": "manager"},
    *({"name": name, "role": "rep", "manager": "李经理"} for name in REPS),
]
LEADS = 2000


async def arrive(chat, count=LEADS, chunk=200):
    """The morning's leads, posted in batches as the intake API groups them."""
    for start in range(0, count, chunk):
        async with chat.rt.sessions() as session, session.begin():
            await create_leads(session, chat.rt, [
                LeadInput(company=f"示例客户{n:04d}有限公司", contact="刘洋",
                          phone=f"139{n:08d}", industry=("industrial", "medical")[n % 2],
                          urgency=("high", "medium", "low")[n % 3], source="expo")
                for n in range(start, min(start + chunk, count))
            ], chat.rt.now(), origin="api")


async def owners(chat) -> dict[str | None, int]:
    async with chat.rt.sessions() as session:
        rows = (await session.execute(
            select(Member.name, func.count(Lead.id))
            .select_from(Lead).outerjoin(Member, Member.id == Lead.assignee_id)
            .group_by(Member.name)
        )).all()
    return {name: count for name, count in rows}


async def sent_to_reps(chat) -> dict[str, tuple[int, int]]:
    """Messages and cards delivered to each rep so far."""
    async with chat.rt.sessions() as session:
        rows = (await session.execute(
            select(Member.name, func.count(),
                   func.sum(case((Outgoing.kind == "card", 1), else_=0)))
            .join(Member, Outgoing.recipient == literal("member:") + cast(Member.id, String))
            .where(Outgoing.state == "sent", Member.role == "rep")
            .group_by(Member.name))).all()
    return {name: (total, cards) for name, total, cards in rows}


async def texts_to(chat, name) -> list[str]:
    return [m.text for m in await chat.inbox(name)]


async def test_engine_off_and_a_poisoned_roster_still_share_the_morning_fairly(chat):
    await chat.add_members(*ROSTER)
    # The import that started it all: "-" in max_open_leads. Refused, nothing written.
    result = await import_roster_rows(chat.rt, [
        {"name": "销售1", "role": "rep", "max_open_leads": "8"},
        {"name": "销售2", "role": "rep", "max_open_leads": "-"},
        {"name": "销售3", "role": "rep", "max_open_leads": "-3"},
    ])
    assert [(r.row, r.field) for r in result.rejected] == [(3, "max_open_leads"),
                                                           (4, "max_open_leads")]
    assert result.written == 0
    async with chat.rt.sessions() as session:
        caps = (await session.scalars(select(Member.max_open_leads))).all()
    assert set(caps) == {None}

    [alert] = await chat.say("管理员甲", "/引擎 关")
    assert alert.text.startswith("分配引擎已关闭")
    await arrive(chat)
    await chat.settle()

    counts = await owners(chat)
    assert counts == {name: LEADS // len(REPS) for name in REPS}  # 250 each, no more
    async with chat.rt.sessions() as session:
        to_bosses = await session.scalar(
            select(func.count()).select_from(Outgoing)
            .join(Member, Outgoing.recipient == literal("member:") + cast(Member.id, String))
            .where(Member.role.in_(("admin", "manager")), Outgoing.kind == "card"))
    assert to_bosses == 0
    assert await texts_to(chat, "管理员甲") == []  # that one alert, not one per lead
    assert await texts_to(chat, "李经理") == []

    await chat.say("管理员甲", "/引擎 开")
    async with chat.rt.sessions() as session:
        queued = await session.scalar(
            select(func.count()).select_from(Lead).where(Lead.assignee_id.is_(None)))
    assert queued == 0


async def test_every_rep_off_duty_the_leads_wait_then_flow_as_reps_arrive(chat):
    await chat.add_members(*ROSTER)
    # the console delivers like WeCom: 25 messages a minute and 900 an hour per member
    chat.rt.channels["console"].budget = Budget(per_minute=25, per_hour=900)
    night = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # Wednesday 22:00 in Beijing
    chat.rt.clock.now = night
    await arrive(chat)
    await chat.settle()
    assert await owners(chat) == {None: LEADS}
    async with chat.rt.sessions() as session:
        assert (await session.scalars(select(Lead.status).distinct())).all() == ["new"]
    [alert] = await texts_to(chat, "管理员甲")
    assert alert.startswith("暂无可接单的销售")

    # Thursday 08:50: two early reps. Each gets a fair share of the backlog, not all of it.
    chat.rt.clock.now = night + timedelta(hours=10, minutes=50)
    await chat.say("销售1", "/上班")
    await chat.say("销售2", "/上班")
    counts = await owners(chat)
    assert counts["销售1"] == counts["销售2"] == 250 and counts[None] == 1500
    # their cards come at the budget's pace: 25 messages a minute each (the reply to
    # /上班 and 24 cards), the rest wait their turn in the outbox
    assert await sent_to_reps(chat) == {"销售1": (25, 24), "销售2": (25, 24)}
    chat.rt.clock.advance(minutes=1)
    await chat.settle()
    assert await sent_to_reps(chat) == {"销售1": (50, 49), "销售2": (50, 49)}

    # 09:00: the working day brings the others on duty; the sweep hands out the rest.
    chat.rt.clock.now = night + timedelta(hours=11)
    await sweep_once(chat.rt)
    await chat.settle()
    assert await owners(chat) == {name: 250 for name in REPS}
    async with chat.rt.sessions() as session:
        assert await session.get(Alert, "queue") is None
    assert await texts_to(chat, "管理员甲") == []  # still the one alert
