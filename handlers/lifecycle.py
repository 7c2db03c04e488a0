"""The lead's life after acceptance: the first-contact SLA, the public pool (公海), /流失
and /重开. Offering leads and re-routing them is handlers.assignment's business.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Context, audit
from bot.outbox import enqueue, update_card
from bot.router import Router, is_number
from cards.model import Button, CardField, CardModel
from config.settings import WorkingHours
from handlers.assignment import lead_fields, manager_of, route_lead, set_status
from handlers.leads import STATUS_NAMES, T_NO_LEAD
from scheduler.calendar import (
    NO_EXTRA,
    CalendarExtra,
    add_working_minutes,
    working_minutes_between,
)
from storage.models import Assignment, Card, Lead, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

router = Router("lifecycle")

# The cards that belong to one lead: closed together when the lead is closed or pooled.
LEAD_CARD_KINDS = ("lead", "decline", "reassign", "sla")

T_SLA_REASON = "超时未首次联系"
T_SLA_REP = ("线索 #{id}（{company}）分配后 {sla} 个工作小时内没有登记首次联系，"
             "已转给其他同事，您无需再跟进。")
T_SLA_TITLE = "线索 #{id} 超时未联系"
T_SLA_DESC = "{rep} 接手后 {elapsed} 个工作小时未登记首次联系（时限 {sla} 个工作小时）。"
T_SLA_NEXT = "已转给 {name}。"
T_SLA_QUEUED = "暂无可接单的销售，已进入待分配队列。"
T_SLA_DECIDE = "已改派 {n} 次，请指派一位销售。"
T_SLA_DECIDE_STATUS = "已改派 {n} 次，待经理指派"
T_SLA_BUTTON = "改派"
T_FIELD_MISSED_BY, T_FIELD_ASSIGNED, T_FIELD_NOW = "未联系的销售", "分配时间", "现在负责"
T_WAITING = "待分配"

T_POOL_REASON = "{days} 个工作日未跟进，退回公海"
T_POOL_REP = ("线索 #{id}（{company}）已 {days} 个工作日没有跟进，已退回公海重新分配，"
              "您无需再跟进。")
T_POOL_REP_QUEUED = "线索 #{id}（{company}）已 {days} 个工作日没有跟进，已退回公海，等待重新分配。"
T_POOL_MANAGER = ("线索 #{id}（{company}）在 {rep} 名下 {days} 个工作日没有跟进"
                  "（上次跟进 {last}），已退回公海，{next}")
T_POOL_CARD = "已退回公海"

T_LOST_USAGE = "用法：/流失 线索号 原因，例如：/流失 12 客户已选用其他供应商"
T_LOST_NOT_YOURS = "线索 #{id} 不在您的名下，不能标记流失。"
T_LOST_NOT_ACCEPTED = "线索 #{id} 还没有接受；不想跟进请在卡片上点「拒绝」。"
T_NOT_YOUR_TEAM = "线索 #{id} 不属于您团队的销售，不能操作。"
T_LOST_CONVERTED = "线索 #{id} 已转化为客户，不能标记流失。"
T_ALREADY_LOST = "线索 #{id} 已经是流失状态（原因：{reason}）。经理可发送 /重开 {id} 重新打开。"
T_LOST_DONE = "已将线索 #{id}（{company}）标记为流失，原因：{reason}。"
T_LOST_OWNER = "线索 #{id}（{company}）已由 {name} 标记为流失，原因：{reason}。"
T_LOST_CARD = "{name} 已于 {at} 标记流失"

T_REOPEN_USAGE = "用法：/重开 线索号，例如：/重开 12"
T_REOPEN_NOT_LOST = "线索 #{id} 目前是「{status}」，只有已流失的线索可以重开。"
T_REOPEN_NO_OWNER = "线索 #{id} 从没有销售接受过，已重开并重新进入分配{to}。"
T_REOPEN_TO = "：分给 {name}"
T_REOPEN_QUEUED = "（暂无可接单的销售，先进入待分配队列）"
T_REOPEN_OWNER_LEFT = "线索 #{id} 的上一位负责人 {name} 已离职，无法交还。"
T_REOPENED = "已重开线索 #{id}（{company}），交还给 {name}。"
T_REOPENED_OWNER = ("线索 #{id}（{company}）已由 {by} 重新打开并交还给您，"
                    "请尽快联系客户并「记录」跟进。")


# ---- deadlines: pure functions of plain values -------------------------------------------


def working_day_minutes(hours: WorkingHours) -> float:
    """The length of one working day in minutes (09:00-18:00 → 540)."""
    day = date(2000, 1, 3)
    return (datetime.combine(day, hours.end) - datetime.combine(day, hours.start)
            ).total_seconds() / 60


def sla_deadline(
    assigned_at: datetime, sla_hours: float, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra = NO_EXTRA,
) -> datetime:
    """When the first contact is due: `sla_hours` working hours after the assignment, so a
    lead assigned at 22:00 is due in the next working morning."""
    return add_working_minutes(assigned_at, sla_hours * 60, hours, zone, extra)


def pool_deadline(
    last_follow_up: datetime, days: int, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra = NO_EXTRA,
) -> datetime:
    """When a contacted lead returns to the pool: `days` working days of working time after
    its last follow-up (15:00 on a Wednesday and 7 days → 15:00 on the 7th working day
    after). Counted in working time, so a lead always returns inside working hours, when
    someone is there to take it."""
    return add_working_minutes(last_follow_up, days * working_day_minutes(hours), hours, zone,
                               extra)


def hours_text(minutes: float) -> str:
    """Working minutes as hours the way people say them: 120 → "2", 150 → "2.5"."""
    return f"{round(minutes / 60, 1):g}"


def _stamp(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%m-%d %H:%M")


# ---- the sweeps (run by scheduler.sweeps) ------------------------------------------------


async def miss_sla(rt: Runtime) -> int:
    """Take accepted leads without a first contact past the SLA from their rep and route
    them to the next one; returns how many."""
    now = rt.now()
    settings = rt.settings.leads
    hours, zone, extra = settings.hours, rt.settings.zone, rt.calendar_extra
    missed = 0
    async with rt.sessions() as session, session.begin():
        # Working time never runs faster than the clock: a lead assigned less than the
        # SLA ago by the clock cannot be late, so the query leaves it out.
        rows = (await session.execute(
            select(Lead, Assignment)
            .join(Assignment, and_(Assignment.lead_id == Lead.id,
                                   Assignment.member_id == Lead.assignee_id,
                                   Assignment.state == "accepted"))
            .where(Lead.status == "accepted", Lead.contacted_at.is_(None),
                   Lead.assigned_at <= now - timedelta(hours=settings.sla_working_hours))
            .order_by(Lead.id, Assignment.id.desc())
        )).all()
        seen: set[int] = set()
        for lead, assignment in rows:
            if lead.id in seen:
                continue  # the same rep accepted it twice (after /重开): the latest counts
            seen.add(lead.id)
            due = sla_deadline(lead.assigned_at, settings.sla_working_hours, hours, zone, extra)
            if due > now:
                continue
            await _take_back(session, rt, lead, assignment, now)
            missed += 1
    if missed:
        rt.outbox.wake()
    return missed


async def _take_back(
    session: AsyncSession, rt: Runtime, lead: Lead, assignment: Assignment, now: datetime
) -> None:
    settings, zone = rt.settings.leads, rt.settings.zone
    rep = await session.get(Member, assignment.member_id)
    elapsed = working_minutes_between(lead.assigned_at, now, settings.hours, zone,
                                      rt.calendar_extra)
    sla = f"{settings.sla_working_hours:g}"
    assigned_at = lead.assigned_at
    # Skipped from now on like a decliner (handlers.assignment reads this state).
    assignment.state, assignment.reason = "sla_missed", T_SLA_REASON
    audit(session, None, "lead.sla_missed", "lead", lead.id, {"rep": rep.name},
          {"working_minutes": round(elapsed)}, now)
    await enqueue(session, rt, rep, T_SLA_REP.format(id=lead.id, company=lead.company, sla=sla))

    lead.reroutes += 1
    nxt = None
    if lead.reroutes >= settings.max_reroutes:
        lead.assignee_id = None
        set_status(session, lead, "new", now, None, T_SLA_DECIDE_STATUS.format(n=lead.reroutes))
        outcome = T_SLA_DECIDE.format(n=lead.reroutes)
    else:
        nxt = await route_lead(session, rt, lead, now, exclude={rep.id})
        outcome = T_SLA_NEXT.format(name=nxt.name) if nxt else T_SLA_QUEUED
    card = CardModel(
        title=T_SLA_TITLE.format(id=lead.id), kind="sla", object_id=lead.id,
        description=T_SLA_DESC.format(rep=rep.name, elapsed=hours_text(elapsed), sla=sla)
        + outcome,
        fields=[*lead_fields(lead, rt), CardField(T_FIELD_MISSED_BY, rep.name),
                CardField(T_FIELD_ASSIGNED, _stamp(assigned_at, zone)),
                CardField(T_FIELD_NOW, nxt.name if nxt else T_WAITING)],
        buttons=[Button(T_SLA_BUTTON, f"reassign:{lead.id}", "primary")],
    )
    for manager in await manager_of(session, rep):
        await enqueue(session, rt, manager, card)


async def return_to_pool(rt: Runtime) -> int:
    """Send contacted leads without a follow-up for the pool period back to the pool (公海)
    and route them again at once; returns how many."""
    now = rt.now()
    settings = rt.settings.leads
    hours, zone, extra = settings.hours, rt.settings.zone, rt.calendar_extra
    period = settings.pool_working_days * working_day_minutes(hours)
    last_follow_up = func.coalesce(Lead.last_activity_at, Lead.contacted_at)
    returned = 0
    async with rt.sessions() as session, session.begin():
        leads = (await session.scalars(
            select(Lead)
            .where(Lead.status == "contacted",
                   last_follow_up <= now - timedelta(minutes=period))
            .order_by(Lead.id)
        )).all()
        for lead in leads:
            since = lead.last_activity_at or lead.contacted_at
            if since is None or pool_deadline(since, settings.pool_working_days, hours, zone,
                                              extra) > now:
                continue
            await _to_pool(session, rt, lead, since, now)
            returned += 1
    if returned:
        rt.outbox.wake()
    return returned


async def _to_pool(
    session: AsyncSession, rt: Runtime, lead: Lead, since: datetime, now: datetime
) -> None:
    days = rt.settings.leads.pool_working_days
    former = await session.get(Member, lead.assignee_id) if lead.assignee_id else None
    await close_lead_cards(session, rt, lead, T_POOL_CARD)
    lead.assignee_id = None
    lead.pool_returns += 1
    lead.reroutes = 0
    # The next owner's first contact is a first contact again, with its own SLA.
    lead.contacted_at = None
    set_status(session, lead, "new", now, None, T_POOL_REASON.format(days=days))
    audit(session, None, "lead.pool", "lead", lead.id,
          {"status": "contacted", "rep": former.name if former else None},
          {"status": "new", "pool_returns": lead.pool_returns}, now)
    # Limitation: the former owner is skipped for this routing only. When nobody else is
    # available the lead waits in the queue, and the queue may offer it to them again.
    nxt = await route_lead(session, rt, lead, now, exclude={former.id} if former else None)
    if former is None:
        return
    told = T_POOL_REP if nxt else T_POOL_REP_QUEUED
    await enqueue(session, rt, former, told.format(id=lead.id, company=lead.company, days=days))
    text = T_POOL_MANAGER.format(
        id=lead.id, company=lead.company, rep=former.name, days=days,
        last=_stamp(since, rt.settings.zone),
        next=T_SLA_NEXT.format(name=nxt.name) if nxt else T_SLA_QUEUED,
    )
    for manager in await manager_of(session, former):
        await enqueue(session, rt, manager, text)


async def close_lead_cards(session: AsyncSession, rt: Runtime, lead: Lead, status: str) -> None:
    """Withdraw the lead's open offer and close every open card about it."""
    offers = (await session.scalars(
        select(Assignment).where(Assignment.lead_id == lead.id, Assignment.state == "offered")
    )).all()
    for assignment in offers:
        assignment.state = "withdrawn"
    cards = (await session.scalars(
        select(Card).where(Card.object_id == lead.id, Card.kind.in_(LEAD_CARD_KINDS),
                           Card.state == "open")
    )).all()
    for card in cards:
        await update_card(session, rt, card, CardModel.from_json(card.body).closed(status))


# ---- /流失 and /重开 ---------------------------------------------------------------------


async def _rep_of(session: AsyncSession, lead: Lead) -> Member | None:
    """Whose lead it is: the assignee, or for a lead waiting unassigned, the rep it was
    last offered to."""
    member_id = lead.assignee_id or await session.scalar(
        select(Assignment.member_id).where(Assignment.lead_id == lead.id)
        .order_by(Assignment.id.desc()).limit(1)
    )
    return await session.get(Member, member_id) if member_id else None


async def _may_manage(ctx: Context, lead: Lead, rep: Member | None) -> bool:
    """Admins act on any lead, managers on their own reps' leads; else the refusal is said."""
    if ctx.member.role == "admin":
        return True
    if rep is not None and rep.manager_id == ctx.member.id:
        return True
    await ctx.reply(T_NOT_YOUR_TEAM.format(id=lead.id))
    ctx.outcome = "not_allowed"
    return False


def _lead_number(text: str) -> int | None:
    number = text.strip().lstrip("#")
    return int(number) if is_number(number) else None


async def _named_lead(ctx: Context, lead_id: int) -> Lead | None:
    lead = await ctx.session.get(Lead, lead_id)
    if lead is None:
        await ctx.reply(T_NO_LEAD.format(id=lead_id))
    return lead


@router.command("流失", roles={"rep", "manager", "admin"}, usage=T_LOST_USAGE,
                summary="/流失 线索号 原因：关闭一条线索")
async def lose(ctx: Context, args: str) -> None:
    first, _, reason = args.partition(" ")
    lead_id, reason = _lead_number(first), reason.strip()[:200]
    if lead_id is None or not reason:
        await ctx.reply(T_LOST_USAGE)
        return
    lead = await _named_lead(ctx, lead_id)
    if lead is None:
        return
    if lead.status == "converted":
        await ctx.reply(T_LOST_CONVERTED.format(id=lead.id))
        return
    if lead.status == "lost":
        await ctx.reply(T_ALREADY_LOST.format(id=lead.id, reason=lead.lost_reason or ""))
        return
    rep = await _rep_of(ctx.session, lead)
    if ctx.member.role == "rep":
        if lead.assignee_id != ctx.member.id:
            await ctx.reply(T_LOST_NOT_YOURS.format(id=lead.id))
            ctx.outcome = "not_allowed"
            return
        if lead.status == "assigned":
            await ctx.reply(T_LOST_NOT_ACCEPTED.format(id=lead.id))
            return
    elif not await _may_manage(ctx, lead, rep):
        return

    before = lead.status
    await close_lead_cards(ctx.session, ctx.rt, lead, T_LOST_CARD.format(
        name=ctx.member.name, at=_stamp(ctx.now, ctx.settings.zone)))
    lead.lost_reason = reason
    set_status(ctx.session, lead, "lost", ctx.now, ctx.member, reason)
    ctx.audit("lead.lost", "lead", lead.id, {"status": before},
              {"status": "lost", "reason": reason})
    await ctx.reply(T_LOST_DONE.format(id=lead.id, company=lead.company, reason=reason))
    if rep is not None and rep.id != ctx.member.id and lead.assignee_id == rep.id:
        await ctx.send(rep, T_LOST_OWNER.format(id=lead.id, company=lead.company,
                                                name=ctx.member.name, reason=reason))


async def last_owner(session: AsyncSession, lead: Lead) -> Member | None:
    """The member of the lead's last accepted offer; for a lead its rep entered (kept
    without an offer), that rep."""
    member_id = await session.scalar(
        select(Assignment.member_id)
        .where(Assignment.lead_id == lead.id, Assignment.state == "accepted")
        .order_by(Assignment.id.desc()).limit(1)
    )
    if member_id is None and lead.accepted_at is not None:
        member_id = lead.assignee_id
    return await session.get(Member, member_id) if member_id else None


@router.command("重开", roles={"manager", "admin"}, usage=T_REOPEN_USAGE,
                summary="/重开 线索号：重新打开已流失的线索")
async def reopen(ctx: Context, args: str) -> None:
    lead_id = _lead_number(args)
    if lead_id is None:
        await ctx.reply(T_REOPEN_USAGE)
        return
    lead = await _named_lead(ctx, lead_id)
    if lead is None:
        return
    if lead.status != "lost":
        await ctx.reply(T_REOPEN_NOT_LOST.format(
            id=lead.id, status=STATUS_NAMES.get(lead.status, lead.status)))
        return
    owner = await last_owner(ctx.session, lead)
    if owner is None:
        # Closed before anyone took it (a junk lead judged too early): the engine again.
        ctx.audit("lead.reopen", "lead", lead.id, {"status": "lost",
                                                   "reason": lead.lost_reason}, {"status": "new"})
        lead.assignee_id, lead.lost_reason, lead.reroutes = None, None, 0
        set_status(ctx.session, lead, "new", ctx.now, ctx.member, "重开")
        rep = await route_lead(ctx.session, ctx.rt, lead, ctx.now)
        to = T_REOPEN_TO.format(name=rep.name) if rep else T_REOPEN_QUEUED
        await ctx.reply(T_REOPEN_NO_OWNER.format(id=lead.id, to=to))
        return
    if not await _may_manage(ctx, lead, owner):
        return
    if owner.status == "left":
        await ctx.reply(T_REOPEN_OWNER_LEFT.format(id=lead.id, name=owner.name))
        return

    reason = lead.lost_reason
    lead.assignee_id, lead.lost_reason = owner.id, None
    # A lead that had been contacted goes back as contacted (its follow-ups still count,
    # for the pool timer from now on and for /转化); one that never was, as accepted, its
    # first-contact SLA counting from the reopening.
    status = "contacted" if lead.contacted_at is not None else "accepted"
    lead.assigned_at = lead.accepted_at = ctx.now
    if status == "contacted":
        lead.last_activity_at = ctx.now
    set_status(ctx.session, lead, status, ctx.now, ctx.member, "重开")
    ctx.audit("lead.reopen", "lead", lead.id, {"status": "lost", "reason": reason},
              {"status": status, "owner": owner.name})
    await ctx.reply(T_REOPENED.format(id=lead.id, company=lead.company, name=owner.name))
    if owner.id != ctx.member.id:
        await ctx.send(owner, T_REOPENED_OWNER.format(id=lead.id, company=lead.company,
                                                      by=ctx.member.name))
