"""Offering leads to reps: choosing the rep, the lead card, re-routing, the queue.

Owns the lead's assignment life (new → assigned → accepted, re-routes, the manager's
decision after too many); who is chosen is handlers.choosing's business.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts import alert_admins, resolve
from bot.context import audit
from bot.outbox import enqueue, update_card
from cards.model import Button, CardField, CardModel
from handlers.availability import RepState, is_available, on_leave
from handlers.choosing import (
    QUEUE_ALERT,
    T_ALERT_QUEUE,
    EngineChoice,
    RoundRobinChoice,
    engine_failed,
    engine_inputs,
    engine_recovered,
)
from storage.models import Assignment, Card, Lead, LeadImport, LeadStatusChange, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

OPEN_STATUSES = ("assigned", "accepted")

URGENCY = {"high": "高", "medium": "中", "low": "低"}

T_CARD_TITLE = "新线索 #{id}"
T_WHY_TRANSFER = "{name} 转给您"
T_WHY_MANAGER = "经理 {name} 指派给您"
T_ACCEPT, T_DECLINE, T_TRANSFER = "接受", "拒绝", "转给同事"
T_REROUTED_MANAGER = "线索 #{id}（{company}）{rep}{what}，已转给 {next}。"
T_REROUTED_QUEUED = "线索 #{id}（{company}）{rep}{what}，暂无可接单的销售，已进入待分配队列。"
T_WHAT_DECLINED = "拒绝了（原因：{reason}）"
T_WHAT_EXPIRED = "在 {minutes} 个工作分钟内未接受"
T_REASSIGN_TITLE = "线索 #{id} 需要您指派"
T_REASSIGN_DESC = "已改派 {n} 次仍无人接受，请指派给一位销售。"
T_REASSIGN_BUTTON = "指派销售"
T_EXPIRED_STATUS = "已超时未接受，线索已转出"
T_WITHDRAWN_STATUS = "线索已改派，此卡片失效"


class Team(NamedTuple):
    states: list[RepState]
    # The rep's latest offer, as its assignment id: a later offer has a higher number.
    last_offered: dict[int, int]
    members: dict[int, Member]  # held here, so the session's identity map keeps them


async def rep_states(
    session: AsyncSession, rt: Runtime, *, member_ids: list[int] | None = None
) -> Team:
    """Every rep (or the given members) with loads counted from the leads themselves,
    and when each was last offered a lead; one query for the whole team."""
    open_leads = (
        select(func.count()).select_from(Lead)
        .where(Lead.assignee_id == Member.id, Lead.status.in_(OPEN_STATUSES))
        .correlate(Member).scalar_subquery()
    )
    last_offer = (
        select(func.max(Assignment.id)).where(Assignment.member_id == Member.id)
        .correlate(Member).scalar_subquery()
    )
    query = select(Member, open_leads, last_offer)
    if member_ids is None:
        query = query.where(Member.role == "rep", Member.status != "left")
    else:
        query = query.where(Member.id.in_(member_ids))
    default_cap = rt.settings.leads.max_open_leads
    states, last, members = [], {}, {}
    for m, count, offered_at in (await session.execute(query)).all():
        members[m.id] = m
        states.append(RepState(
            member_id=m.id, role=m.role, status=m.status, duty=m.duty, duty_at=m.duty_at,
            leave_until=m.leave_until, reachable=rt.route(m) is not None, open_leads=count,
            cap=m.max_open_leads if m.max_open_leads is not None else default_cap,
        ))
        if offered_at is not None:
            last[m.id] = int(offered_at)
    return Team(states, last, members)


async def available_reps(session: AsyncSession, rt: Runtime, now: datetime) -> Team:
    team = await rep_states(session, rt)
    hours, zone = rt.settings.leads.hours, rt.settings.zone
    extra = rt.calendar_extra
    available = [s for s in team.states if is_available(s, now, hours, zone, extra)]
    return team._replace(states=available)


# Offers that ended with the rep passing the lead on: they are skipped when it is re-routed.
SKIPPED_STATES = ("declined", "expired", "sla_missed")


async def _declined_by(session: AsyncSession, lead_id: int) -> set[int]:
    rows = await session.scalars(
        select(Assignment.member_id)
        .where(Assignment.lead_id == lead_id, Assignment.state.in_(SKIPPED_STATES))
    )
    return set(rows.all())


def set_status(
    session: AsyncSession, lead: Lead, status: str, now: datetime,
    actor: Member | None = None, reason: str | None = None,
) -> None:
    if lead.status == status:
        return
    session.add(LeadStatusChange(
        lead_id=lead.id, from_status=lead.status, to_status=status,
        actor_id=actor.id if actor else None, reason=reason, at=now,
    ))
    lead.status = status
    lead.updated_at = now


def lead_fields(lead: Lead, rt: Runtime) -> list[CardField]:
    industries, sources = rt.settings.leads.industries, rt.settings.leads.sources
    tags = " / ".join(t for t in (
        industries.get(lead.industry or "", lead.industry or ""),
        URGENCY.get(lead.urgency or "", ""),
        sources.get(lead.source or "", lead.source or ""),
    ) if t)
    fields = [
        CardField("公司", lead.company),
        CardField("联系人", lead.contact),
        CardField("电话", lead.phone or lead.landline or "未填"),
    ]
    if tags:
        fields.append(CardField("行业/紧急/来源", tags))
    if lead.note:
        fields.append(CardField("备注", lead.note[:60]))
    return fields


def lead_card(lead: Lead, rt: Runtime, why: str) -> CardModel:
    return CardModel(
        title=T_CARD_TITLE.format(id=lead.id), kind="lead", object_id=lead.id,
        description=why, fields=lead_fields(lead, rt),
        buttons=[
            Button(T_ACCEPT, f"accept:{lead.id}", "primary"),
            Button(T_DECLINE, f"decline:{lead.id}", "danger"),
            Button(T_TRANSFER, f"transfer:{lead.id}"),
        ],
    )


async def offer(
    session: AsyncSession, rt: Runtime, lead: Lead, rep: Member, now: datetime, *,
    method: str, why: str, actor: Member | None = None, card: bool = True,
) -> Assignment:
    """Offer the lead to this rep: the assignment, the status and the card, together.

    Without `card` the rep is told by the caller instead (an import's one digest), and
    accepts from /我的线索.
    """
    assignment = Assignment(lead_id=lead.id, member_id=rep.id, method=method, why=why,
                            offered_at=now)
    session.add(assignment)
    lead.assignee_id = rep.id
    lead.assigned_at = now
    set_status(session, lead, "assigned", now, actor, why)
    if card:
        assignment.card = await enqueue(session, rt, rep, lead_card(lead, rt, why))
    audit(session, actor, "lead.offer", "lead", lead.id, None,
          {"rep": rep.name, "method": method}, now)
    rt.metrics.assignments.labels(method).inc()
    return assignment


async def route_lead(
    session: AsyncSession, rt: Runtime, lead: Lead, now: datetime, *,
    exclude: set[int] | None = None,
) -> Member | None:
    """Offer the lead to the best available rep, or leave it queued."""
    return (await route_leads(session, rt, [lead], now, exclude=exclude))[0]


async def route_leads(
    session: AsyncSession, rt: Runtime, leads: list[Lead], now: datetime, *,
    exclude: set[int] | None = None, allowance: dict[int, int] | None = None,
    card: bool = True,
) -> list[Member | None]:
    """Offer each lead, in order, to the rep the engine (or, as its fallback, round-robin)
    chooses among the available reps.

    The team is read once; each offer then counts against the chosen rep, as if the leads
    had arrived one by one. `allowance`, when given, is how many more leads each rep may
    get (counted down here; a rep missing from it gets none): a backlog is not handed to
    the first rep who comes on duty. Without `card`, the offers carry no card (see offer).
    """
    team = await available_reps(session, rt, now)
    if not team.states:
        for lead in leads:
            _queue(session, lead, now)
        if leads:
            await alert_admins(session, rt, QUEUE_ALERT, T_ALERT_QUEUE)
        return [None] * len(leads)
    config, _ = await engine_inputs(session, rt)
    chooser = None
    if config.on:
        try:
            chooser = await EngineChoice.build(session, rt, team, config, now)
        except Exception as exc:  # noqa: BLE001 - any scoring fault falls back, once alerted
            await engine_failed(session, rt, exc)
    if chooser is None:
        chooser = RoundRobinChoice(team)
    order = max(team.last_offered.values(), default=0)  # offers of this batch come after
    chosen_reps: list[Member | None] = []
    for number, lead in enumerate(leads):
        skip = set(exclude or ())
        if allowance is not None:
            skip |= {m for m in team.members if allowance.get(m, 0) <= 0}
        if lead.reroutes:
            skip |= await _declined_by(session, lead.id)
        try:
            choice = chooser.choose(lead, skip)
        except Exception as exc:  # noqa: BLE001
            await engine_failed(session, rt, exc)
            chooser = RoundRobinChoice(team, chooser.taken)
            choice = chooser.choose(lead, skip)
        if choice is None:
            _queue(session, lead, now)
            chosen_reps.append(None)
            continue
        rep = team.members[choice.member_id]
        # A microsecond apart, so the stored times keep the order of this batch.
        at = now + timedelta(microseconds=number)
        assignment = await offer(session, rt, lead, rep, at, method=choice.method,
                                 why=choice.why, card=card)
        assignment.scores, assignment.rule_id = choice.scores, choice.rule_id
        order += 1
        chooser.take(choice.member_id, order)
        if allowance is not None:
            allowance[choice.member_id] = allowance.get(choice.member_id, 0) - 1
        chosen_reps.append(rep)
    if isinstance(chooser, EngineChoice):
        await engine_recovered(session, rt)
    return chosen_reps


def _queue(session: AsyncSession, lead: Lead, now: datetime) -> None:
    lead.assignee_id = None
    set_status(session, lead, "new", now, None, "暂无可接单的销售")


async def current_offer(session: AsyncSession, lead: Lead) -> Assignment | None:
    return await session.scalar(
        select(Assignment)
        .where(Assignment.lead_id == lead.id, Assignment.state == "offered")
        .order_by(Assignment.id.desc()).limit(1)
    )


async def close_offer_card(
    session: AsyncSession, rt: Runtime, assignment: Assignment, status: str
) -> None:
    """Close every open card of this offer (/我的线索 may have sent it again)."""
    cards = (await session.scalars(
        select(Card).where(Card.kind == "lead", Card.object_id == assignment.lead_id,
                           Card.member_id == assignment.member_id, Card.state == "open")
    )).all()
    for card in cards:
        await update_card(session, rt, card, CardModel.from_json(card.body).closed(status))


async def active_admins(session: AsyncSession) -> list[Member]:
    """The admins who have not left, in roster order."""
    return list((await session.scalars(
        select(Member).where(Member.role == "admin", Member.status != "left")
        .order_by(Member.id))).all())


async def manager_of(session: AsyncSession, member: Member) -> list[Member]:
    """The member's manager, or the admins when there is none."""
    if member.manager_id:
        manager = await session.get(Member, member.manager_id)
        if manager is not None and manager.status != "left":
            return [manager]
    return await active_admins(session)


async def reroute(
    session: AsyncSession, rt: Runtime, lead: Lead, previous: Member, now: datetime,
    what: str,
) -> Member | None:
    """After a decline or an expired offer: the next rep, the manager told; after too many
    re-routes the lead waits and the manager gets a card to decide."""
    lead.reroutes += 1
    managers = await manager_of(session, previous)
    if lead.reroutes >= rt.settings.leads.max_reroutes:
        lead.assignee_id = None
        set_status(session, lead, "new", now, None, f"已改派 {lead.reroutes} 次，待经理指派")
        for manager in managers:
            await enqueue(session, rt, manager, reassign_card(lead, rt))
        return None
    rep = await route_lead(session, rt, lead, now)
    template = T_REROUTED_MANAGER if rep else T_REROUTED_QUEUED
    text = template.format(id=lead.id, company=lead.company, rep=previous.name, what=what,
                           next=rep.name if rep else "")
    for manager in managers:
        await enqueue(session, rt, manager, text)
    return rep


def reassign_card(lead: Lead, rt: Runtime) -> CardModel:
    return CardModel(
        title=T_REASSIGN_TITLE.format(id=lead.id), kind="reassign", object_id=lead.id,
        description=T_REASSIGN_DESC.format(n=lead.reroutes), fields=lead_fields(lead, rt),
        buttons=[Button(T_REASSIGN_BUTTON, f"reassign:{lead.id}", "primary")],
    )


async def drain_queue(rt: Runtime, chunk: int = 500) -> int:
    """Offer queued leads (oldest first) while reps are available; returns how many.

    Each chunk is one short transaction, so a long queue does not hold the database. The
    backlog is shared out level: no rep is brought above the fair share of the queue and
    the open leads of the reps who can still work today, so the first rep on duty is not
    handed the night's leads; the others' shares wait for them.
    """
    offered = 0
    async with rt.sessions() as session:
        waiting = await session.scalar(select(func.count()).select_from(Lead).where(*_queued(rt)))
        team = await rep_states(session, rt)
    if not waiting:
        await _queue_empty(rt)
        return 0
    allowance = fair_allowance(team, waiting, rt.now(), rt.settings.zone)
    while True:
        async with rt.sessions() as session, session.begin():
            queued = list((await session.scalars(
                select(Lead).where(*_queued(rt)).order_by(Lead.id).limit(chunk)
            )).all())
            reps = await route_leads(session, rt, queued, rt.now(), allowance=allowance)
            placed = sum(rep is not None for rep in reps)
        offered += placed
        if placed < len(queued) or len(queued) < chunk:
            break
    if offered:
        rt.outbox.wake()
    if offered == waiting:
        await _queue_empty(rt)
    return offered


def fair_allowance(team: Team, waiting: int, now: datetime, zone: ZoneInfo) -> dict[int, int]:
    """How many of `waiting` leads each rep who can still work today may get: nobody above
    the level share of those leads and the reps' open ones."""
    workforce = [s for s in team.states if could_work_today(s, now, zone)]
    level = math.ceil((waiting + sum(s.open_leads for s in workforce)) / max(len(workforce), 1))
    return {s.member_id: level - s.open_leads for s in workforce}


def could_work_today(rep: RepState, now: datetime, zone: ZoneInfo) -> bool:
    """Active, reachable, not on leave and not signed off (/下班) today."""
    if rep.status != "active" or not rep.reachable or on_leave(rep.status, rep.leave_until, now):
        return False
    signed_off = (rep.duty == "off" and rep.duty_at is not None
                  and rep.duty_at.astimezone(zone).date() == now.astimezone(zone).date())
    return not signed_off


# An import being assigned holds its leads; when its lease runs out (a crash), the sweep
# resumes its hand-out (handlers.lead_import.resume_imports) and the queue never sees them.
IMPORT_LEASE = timedelta(minutes=10)
# A lead announced in a digest (an import's hand-out) waits a working day for its accept
# from /我的线索: nobody accepts two hundred leads within a card's half hour.
DIGEST_ACCEPT_MINUTES = 480
DIGEST_EXPIRY_BATCH = 200


def _queued(rt: Runtime) -> tuple:
    """Leads waiting for a rep (not those waiting for their manager's decision, nor those
    of an import that is handing them out by digest right now)."""
    importing = select(LeadImport.id).where(LeadImport.state == "writing")
    return (Lead.status == "new", Lead.assignee_id.is_(None),
            Lead.reroutes < rt.settings.leads.max_reroutes,
            Lead.import_id.is_(None) | Lead.import_id.not_in(importing))


async def _queue_empty(rt: Runtime) -> None:
    async with rt.sessions() as session, session.begin():
        await resolve(session, QUEUE_ALERT)


async def expire_offers(rt: Runtime) -> int:
    """Re-route offers not accepted within the accept window (working minutes from the
    card's delivery)."""
    from scheduler.calendar import add_working_minutes

    now = rt.now()
    settings = rt.settings.leads
    expired = 0
    async with rt.sessions() as session, session.begin():
        rows = (await session.execute(
            select(Assignment, Card.delivered_at)
            .join(Card, Card.id == Assignment.card_id)
            .where(Assignment.state == "offered", Card.delivered_at.is_not(None))
            .order_by(Assignment.id)
        )).all()
        # Leads announced in a digest have no card: a working day from the offer, a few
        # hundred a pass (each is re-routed with a card of its own).
        digested = (await session.scalars(
            select(Assignment)
            .where(Assignment.state == "offered", Assignment.card_id.is_(None),
                   Assignment.offered_at < now - timedelta(minutes=DIGEST_ACCEPT_MINUTES))
            .order_by(Assignment.id).limit(DIGEST_EXPIRY_BATCH)
        )).all()
        windows = [(a, delivered_at, settings.accept_minutes) for a, delivered_at in rows]
        windows += [(a, a.offered_at, DIGEST_ACCEPT_MINUTES) for a in digested]
        for assignment, since, minutes in windows:
            deadline = add_working_minutes(since, minutes, settings.hours, rt.settings.zone,
                                           rt.calendar_extra)
            if deadline > now:
                continue
            lead = await session.get(Lead, assignment.lead_id)
            rep = await session.get(Member, assignment.member_id)
            if lead is None or rep is None or lead.assignee_id != rep.id:
                assignment.state = "withdrawn"
                continue
            assignment.state, assignment.decided_at = "expired", now
            await close_offer_card(session, rt, assignment, T_EXPIRED_STATUS)
            audit(session, None, "lead.expire", "lead", lead.id, {"rep": rep.name}, None, now)
            await reroute(session, rt, lead, rep, now,
                          T_WHAT_EXPIRED.format(minutes=minutes))
            expired += 1
    if expired:
        rt.outbox.wake()
    return expired


async def withdraw_offers(session: AsyncSession, rt: Runtime, lead: Lead) -> None:
    """Close any open offer of the lead (it is being reassigned by hand)."""
    offers = (await session.scalars(
        select(Assignment).where(Assignment.lead_id == lead.id, Assignment.state == "offered")
    )).all()
    for assignment in offers:
        assignment.state = "withdrawn"
        await close_offer_card(session, rt, assignment, T_WITHDRAWN_STATUS)
