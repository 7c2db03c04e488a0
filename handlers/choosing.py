"""Who gets the next lead: the engine with its rules, or round-robin as its fallback.

Owns reading what the engine needs (mode, weights, rules, each rep's history and presence)
and the two choosers handlers.assignment calls per lead; the scoring itself is the pure
handlers.engine, the rule grammar the pure handlers.rules.
"""

from __future__ import annotations

import logging
import time as time_
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts import alert_admins, resolve
from handlers import engine, rules
from handlers.availability import RepState, round_robin
from storage.models import Assignment, ConfigValue, Lead, Presence, Rule

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.assignment import Team

log = logging.getLogger(__name__)

MODE_KEY, WEIGHTS_KEY, ERROR_KEY = "engine.mode", "engine.weights", "engine.last_error"
QUEUE_ALERT, ENGINE_OFF_ALERT, ENGINE_ERROR_ALERT = "queue", "engine_off", "engine_error"
HISTORY_DAYS = 30
INPUTS_TTL = 2.0  # seconds a process keeps the mode, weights and rules
FACTORS_TTL = 15.0  # seconds it keeps the reps' 30-day history and today's presence

T_WHY_ROUND_ROBIN = "轮流分配：您在岗、可接单，当前未跟进线索 {open} 条"
T_ALERT_QUEUE = ("暂无可接单的销售（都不在班、休假或未跟进已满），新线索进入待分配队列。"
                 "有销售上班、销假或名额空出后会自动分配；发送 /引擎 状态 查看队列。")
T_ALERT_ENGINE_OFF = "分配引擎已关闭：新线索改为在岗销售之间轮流分配。发送 /引擎 开 恢复。"
T_ALERT_ENGINE_ERROR = ("分配引擎出错（{error}），新线索暂时改为轮流分配。"
                        "发送 /引擎 状态 查看详情；恢复正常后自动切回。")


@dataclass(slots=True, frozen=True)
class EngineConfig:
    on: bool
    weights: dict[str, int]
    last_error: dict[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class Choice:
    member_id: int
    method: str
    why: str
    scores: dict[str, Any]
    rule_id: int | None = None


def _cached(rt: Runtime, key: object, ttl: float) -> Any:
    entry = rt.engine_inputs.get(key)
    return entry[1] if entry is not None and entry[0] > time_.monotonic() else None


def _keep(rt: Runtime, key: object, ttl: float, value: Any) -> Any:
    if len(rt.engine_inputs) > 64:  # many rep sets: start again
        rt.engine_inputs.clear()
    rt.engine_inputs[key] = (time_.monotonic() + ttl, value)
    return value


def forget_engine_inputs(rt: Runtime) -> None:
    """An admin changed the mode, the weights or a rule: this process reads them again.

    # Limitation: another process sharing the database keeps its copy for up to
    # INPUTS_TTL seconds, so there a change takes effect a moment later.
    """
    rt.engine_inputs.clear()


async def engine_inputs(session: AsyncSession, rt: Runtime
                        ) -> tuple[EngineConfig, list[tuple[int, dict[str, Any]]]]:
    """Mode, weights and the enabled rules, read at most every INPUTS_TTL seconds: every
    batch of leads needs them and they change only by an admin's command."""
    found = _cached(rt, "inputs", INPUTS_TTL)
    if found is None:
        config = await engine_config(session, rt)
        parsed = [(r.id, r.parsed) for r in await active_rules(session)]
        found = _keep(rt, "inputs", INPUTS_TTL, (config, parsed))
    return found


async def engine_config(session: AsyncSession, rt: Runtime) -> EngineConfig:
    rows = {row.key: row.value for row in (await session.scalars(
        select(ConfigValue).where(ConfigValue.key.in_((MODE_KEY, WEIGHTS_KEY, ERROR_KEY)))
    )).all()}
    mode = rows.get(MODE_KEY) or {"on": True}
    weights = rows.get(WEIGHTS_KEY) or dict(rt.settings.leads.weights)
    return EngineConfig(bool(mode.get("on", True)), weights, rows.get(ERROR_KEY))


async def active_rules(session: AsyncSession) -> list[Rule]:
    return list((await session.scalars(
        select(Rule).where(Rule.enabled.is_(True), Rule.deleted_at.is_(None))
        .order_by(Rule.position, Rule.id)
    )).all())


def vocabulary(rt: Runtime) -> rules.Vocabulary:
    return rules.Vocabulary(rt.settings.leads.industries, rt.settings.leads.sources)


async def rep_records(session: AsyncSession, rt: Runtime, team: Team,
                      now: datetime) -> list[engine.RepRecord]:
    """The engine's view of the available reps: two queries for the whole team, their
    results kept FACTORS_TTL seconds (a 30-day rate and minutes online do not move faster);
    open leads, caps and offers come fresh with the team."""
    ids = [s.member_id for s in team.states]
    zone = rt.settings.zone
    day_start = datetime.combine(now.astimezone(zone).date(), time(0), zone)
    key = ("factors", tuple(ids), day_start)
    cached = _cached(rt, key, FACTORS_TTL)
    if cached is None:
        cached = _keep(rt, key, FACTORS_TTL,
                       await _history_and_presence(session, ids, day_start, now))
    history, presence = cached
    return [
        engine.RepRecord(
            member_id=s.member_id, name=team.members[s.member_id].name,
            open_leads=s.open_leads, cap=s.cap, history=dict(history[s.member_id]),
            online_minutes=engine.online_minutes(
                [(kind, at) for kind, at in presence[s.member_id] if at <= now],
                day_start, now),
            team=team.members[s.member_id].team, last_offered=team.last_offered.get(s.member_id),
        )
        for s in team.states
    ]


async def _history_and_presence(
    session: AsyncSession, ids: list[int], day_start: datetime, now: datetime,
) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[int, list[tuple[str, datetime]]]]:
    history: dict[int, dict[str, tuple[int, int]]] = {i: {} for i in ids}
    # A lead counts once its outcome is known (converted or lost) or it has had
    # engine.MATURE_DAYS to convert: counting last week's leads as not converted would
    # mark down every rep who got many leads lately.
    converted = func.sum(case((Lead.status == "converted", 1), else_=0))
    rows = await session.execute(
        select(Assignment.member_id, Lead.industry, func.count(func.distinct(Lead.id)),
               converted)
        .join(Lead, Lead.id == Assignment.lead_id)
        .where(Assignment.state == "accepted", Assignment.member_id.in_(ids),
               Assignment.decided_at >= now - timedelta(days=HISTORY_DAYS),
               Lead.industry.is_not(None),
               Lead.status.in_(("converted", "lost"))
               | (Assignment.decided_at <= now - timedelta(days=engine.MATURE_DAYS)))
        .group_by(Assignment.member_id, Lead.industry)
    )
    for member_id, industry, accepted, won in rows.all():
        history[member_id][industry] = (int(accepted), int(won or 0))

    presence: dict[int, list[tuple[str, datetime]]] = {i: [] for i in ids}
    for member_id, kind, at in (await session.execute(
        select(Presence.member_id, Presence.kind, Presence.at)
        .where(Presence.member_id.in_(ids), Presence.at >= day_start)
    )).all():
        presence[member_id].append((kind, at))
    return history, presence


class RoundRobinChoice:
    """The fallback: the available rep offered longest ago, each offer moving it on."""

    def __init__(self, team: Team, taken: dict[int, int] | None = None) -> None:
        self.taken = dict(taken or {})
        self.last = dict(team.last_offered)
        self.states: list[RepState] = []
        for state in team.states:
            state = replace(state, open_leads=state.open_leads + self.taken.get(state.member_id,
                                                                                0))
            if state.cap is None or state.open_leads < state.cap:
                self.states.append(state)

    def choose(self, lead: Lead, skip: set[int]) -> Choice | None:
        chosen = round_robin(self.states, self.last, skip)
        if chosen is None:
            return None
        return Choice(chosen.member_id, "round_robin",
                      T_WHY_ROUND_ROBIN.format(open=chosen.open_leads),
                      {"mode": "round_robin", "open_leads": chosen.open_leads})

    def take(self, member_id: int, order: int) -> None:
        self.taken[member_id] = self.taken.get(member_id, 0) + 1
        self.last[member_id] = order
        states = []
        for state in self.states:
            if state.member_id == member_id:
                state = replace(state, open_leads=state.open_leads + 1)
                if state.cap is not None and state.open_leads >= state.cap:
                    continue
            states.append(state)
        self.states = states


@dataclass
class EngineChoice:
    """The weighted engine, after the first rule that matches the lead."""

    chooser: engine.Chooser
    rules: list[tuple[int, dict[str, Any]]]
    vocab: rules.Vocabulary
    taken: dict[int, int] = field(default_factory=dict)

    @classmethod
    async def build(cls, session: AsyncSession, rt: Runtime, team: Team,
                    config: EngineConfig, now: datetime) -> EngineChoice:
        records = await rep_records(session, rt, team, now)
        chooser = engine.Chooser(records, engine.check_weights(dict(config.weights)))
        _, parsed = await engine_inputs(session, rt)
        return cls(chooser, list(parsed), vocabulary(rt))

    def choose(self, lead: Lead, skip: set[int]) -> Choice | None:
        tags = {"urgency": lead.urgency, "industry": lead.industry, "source": lead.source}
        rule_id, rule = next(((i, r) for i, r in self.rules if rules.matches(r, tags)),
                             (None, None))
        among: set[int] | None = None
        outcome = None
        if rule is not None:
            records = self.chooser.records
            among = {m for m, record in records.items() if m not in skip
                     and rules.failed_requirement(rule, record, lead.industry,
                                                  self.chooser.priors) is None}
            outcome = "qualified"
            if not self._any_open(among):
                # No rep meets the rule: its fallback, silently (PRODUCT.md).
                among, outcome = rules.fallback_pool(rule, list(records.values())), "fallback"
        best = self.chooser.choose(lead.industry, among, skip)
        if best is None and among is not None:
            best, outcome = self.chooser.choose(lead.industry, None, skip), "widened"
        if best is None:
            return None
        weights = self.chooser.weights
        why = engine.explain(best, self.vocab.industries.get(lead.industry or ""),
                             rule_id if outcome == "qualified" else None, weights)
        scores = {"mode": "engine", "weights": weights, "rule": rule_id,
                  "rule_outcome": outcome, "candidates": len(self.chooser.records),
                  **best.as_json()}
        return Choice(best.member_id, "engine", why, scores, rule_id)

    def _any_open(self, ids: set[int]) -> bool:
        records = self.chooser.records
        return any(records[m].cap is None or records[m].open_leads < records[m].cap
                   for m in ids)

    def take(self, member_id: int, order: int) -> None:
        self.taken[member_id] = self.taken.get(member_id, 0) + 1
        self.chooser.take(member_id, order)


async def engine_failed(session: AsyncSession, rt: Runtime, exc: Exception) -> None:
    """Scoring failed: remember the error, tell the admins once; round-robin meanwhile."""
    rt.engine_failing = True
    error = f"{type(exc).__name__}: {exc}"[:300]
    log.error("engine failed, falling back to round-robin: %s", error)
    await session.merge(ConfigValue(key=ERROR_KEY, value={"at": rt.now().isoformat(),
                                                          "error": error}))
    await alert_admins(session, rt, ENGINE_ERROR_ALERT, T_ALERT_ENGINE_ERROR.format(error=error))


async def engine_recovered(session: AsyncSession, rt: Runtime) -> None:
    """Scoring worked: close the alert episode, if this process may have one open."""
    if rt.engine_failing is not False:
        await resolve(session, ENGINE_ERROR_ALERT)
        rt.engine_failing = False
