"""A simulation of lead assignment: static, round-robin and the weighted engine, side by side.

Models a team of 8 reps (3 strong: high conversion, fast first contact; 5 new: lower
conversion that grows a little with volume, slower contact when loaded) over 4 weeks of
Mon–Fri 09:00–18:00, about 40 leads a day, after 4 weeks of static assignment as warm-up
(so the engine starts with 30 days of history, as a team switching over would).
Assumptions: every offer is accepted at once (no declines, no SLA re-route, no cap); a rep
makes first contacts only while online, at a per-hour rate up to a daily capacity, urgent
leads first; a later first contact converts less; work goes on after the 4 weeks until
every lead is contacted. "Top 3" means the three strong reps. Leads, presence and each
rep's work draws come from the seed alone, so the policies meet the same world. Pure and
in-process: `python -m benchmarks.simulate_assignment [--seed N] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from config.settings import LeadSettings
from handlers import engine, rules
from handlers.assignment import Team
from handlers.availability import RepState
from handlers.choosing import EngineChoice, RoundRobinChoice
from storage.models import Lead

ZONE = timezone(timedelta(hours=8))  # Beijing, without needing tzdata
START = date(2025, 3, 3)  # a Monday; warm-up starts here
DAY_MINUTES = 540  # 09:00–18:00
TICK = 15  # minutes per step of the work loop
TICKS = DAY_MINUTES // TICK
LEADS_PER_DAY = 40.0
STATIC_TOP_SHARE = 0.62  # the story: the top 3 took 62 % of new leads
LEAVE_CHANCE = 0.04  # per rep and working day
DRAIN_DAYS = 30  # working days after the window to finish contacting its leads
HISTORY_DAYS = 30
POLICIES = ("static", "round_robin", "engine")

INDUSTRIES = {"industrial": 0.45, "medical": 0.30, "education": 0.25}
URGENCIES = {"high": 0.20, "medium": 0.50, "low": 0.30}
SOURCES = {"expo": 0.30, "sem": 0.45, "referral": 0.25}
URGENCY_LIFT = {"high": 1.3, "medium": 1.0, "low": 0.7}
SOURCE_LIFT = {"expo": 1.0, "sem": 0.8, "referral": 1.3}
URGENCY_ORDER = {"high": 0, "medium": 1, "low": 2}
# Arrivals per hour of the working day, relative (a morning peak, a lunch dip).
HOURLY_SHAPE = (0.9, 1.4, 1.3, 0.7, 0.8, 1.1, 1.1, 0.9, 0.8)


@dataclass(frozen=True, slots=True)
class RepProfile:
    """A rep's true ability, which the engine never sees directly."""

    name: str
    strong: bool
    rates: dict[str, float]  # true conversion per industry, before learning
    learn_gain: float  # conversion added at full experience
    contacts_per_hour: float  # first contacts per online hour with nothing waiting
    daily_capacity: int  # first contacts a day at most
    online_hours: float  # mean time online per working day
    # Open leads at which the contact rate has fallen to half, and stays (0: never slows);
    # the floor keeps a swamped rep working instead of collapsing.
    load_slowdown: float


REPS = (
    RepProfile("销售A", True, {"industrial": 0.42, "medical": 0.30, "education": 0.28},
               0.0, 2.0, 9, 5.5, 0.0),
    RepProfile("销售B", True, {"industrial": 0.32, "medical": 0.40, "education": 0.30},
               0.0, 2.0, 9, 7.0, 0.0),
    RepProfile("销售C", True, {"industrial": 0.36, "medical": 0.30, "education": 0.38},
               0.0, 2.0, 9, 6.0, 0.0),
    RepProfile("销售D", False, dict.fromkeys(INDUSTRIES, 0.12), 0.10, 1.0, 7, 7.5, 12.0),
    RepProfile("销售E", False, dict.fromkeys(INDUSTRIES, 0.13), 0.10, 1.0, 7, 6.5, 12.0),
    RepProfile("销售F", False, dict.fromkeys(INDUSTRIES, 0.11), 0.10, 0.9, 6, 8.0, 12.0),
    RepProfile("销售G", False, dict.fromkeys(INDUSTRIES, 0.12), 0.10, 1.0, 7, 5.0, 12.0),
    RepProfile("销售H", False, dict.fromkeys(INDUSTRIES, 0.10), 0.10, 0.9, 6, 7.0, 12.0),
)
TOP = tuple(i for i, r in enumerate(REPS) if r.strong)
LEARN_LEADS = 80.0  # contacts after which a new rep has learnt about 63 % of the gain


@dataclass(frozen=True, slots=True)
class Arrival:
    """A lead as it arrives, with the world's dice for it drawn up front."""

    lead_id: int
    day: int  # working-day index from START
    minute: float  # minutes after 09:00
    urgency: str
    industry: str
    source: str
    measured: bool  # in the 4 reported weeks (not the warm-up)
    u_convert: float
    u_static: float
    lag_days: float  # converted this long after the first contact, when it converts


@dataclass(frozen=True, slots=True)
class World:
    days: tuple[date, ...]
    arrivals: tuple[tuple[Arrival, ...], ...]  # per day, in time order
    # per day, per rep: online spans in minutes after 09:00; None on leave
    presence: tuple[tuple[tuple[tuple[float, float], ...] | None, ...], ...]
    work_draws: tuple[tuple[tuple[float, ...], ...], ...]  # per day, per rep, per tick
    warmup_days: int
    days_measured: int


@dataclass(slots=True)
class SimLead:
    arrival: Arrival
    rep: int
    assigned_w: float  # working minutes since START 09:00
    assigned_at: datetime
    rep_online: bool  # was the rep online when the lead was offered?
    contacted_w: float | None = None
    contacted_at: datetime | None = None
    converts: bool = False
    converted_at: datetime | None = None


@dataclass(slots=True)
class RunState:
    """One policy's run: who holds what, and what each rep has done."""

    leads: list[SimLead] = field(default_factory=list)
    queues: list[list[SimLead]] = field(default_factory=lambda: [[] for _ in REPS])
    by_rep: list[list[SimLead]] = field(default_factory=lambda: [[] for _ in REPS])
    experience: list[int] = field(default_factory=lambda: [0] * len(REPS))
    done_today: list[int] = field(default_factory=lambda: [0] * len(REPS))
    last_offered: dict[int, datetime] = field(default_factory=dict)
    rule_outcomes: dict[str, int] = field(default_factory=dict)


# ---- the world -------------------------------------------------------------------------


def working_days(start: date, count: int) -> tuple[date, ...]:
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return tuple(days)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _poisson(u: float, mean: float) -> int:
    """The Poisson(mean) count whose CDF first reaches u (one uniform per draw)."""
    count, term = 0, math.exp(-mean)
    total = term
    while u > total and count < 100:
        count += 1
        term *= mean / count
        total += term
    return count


def day_arrivals(seed: int, day: int, first_id: int, measured: bool) -> tuple[Arrival, ...]:
    rng = random.Random(f"{seed}/arrivals/{day}")
    shape = sum(HOURLY_SHAPE)
    found: list[Arrival] = []
    for hour, weight in enumerate(HOURLY_SHAPE):
        for _ in range(_poisson(rng.random(), LEADS_PER_DAY * weight / shape)):
            found.append(Arrival(
                lead_id=0, day=day, minute=60 * hour + 60 * rng.random(),
                urgency=_pick(rng, URGENCIES), industry=_pick(rng, INDUSTRIES),
                source=_pick(rng, SOURCES), measured=measured, u_convert=rng.random(),
                u_static=rng.random(), lag_days=rng.uniform(3, 14)))
    found.sort(key=lambda a: a.minute)
    return tuple(replace(a, lead_id=first_id + i) for i, a in enumerate(found))


def day_presence(seed: int, day: int, rep: int) -> tuple[tuple[float, float], ...] | None:
    """When the rep is online: one arrival, one stretch away (visits, meetings), the end."""
    rng = random.Random(f"{seed}/presence/{day}/{rep}")
    if rng.random() < LEAVE_CHANCE:
        return None
    begin = rng.uniform(0, 45)
    online = min(max(rng.gauss(REPS[rep].online_hours * 60, 60), 120), DAY_MINUTES - begin)
    away = DAY_MINUTES - begin - online
    if away <= 1:
        return ((begin, DAY_MINUTES),)
    leave_at = rng.uniform(begin + 30, DAY_MINUTES - away)
    return ((begin, leave_at), (leave_at + away, DAY_MINUTES))


def build_world(seed: int, days: int = 20, warmup_days: int = 20) -> World:
    calendar = working_days(START, warmup_days + days + DRAIN_DAYS)
    arrivals: list[tuple[Arrival, ...]] = []
    next_id = 1
    for day in range(len(calendar)):
        if day >= warmup_days + days:
            arrivals.append(())
            continue
        today = day_arrivals(seed, day, next_id, measured=day >= warmup_days)
        arrivals.append(today)
        next_id += len(today)
    presence = tuple(tuple(day_presence(seed, d, r) for r in range(len(REPS)))
                     for d in range(len(calendar)))
    draws = tuple(
        tuple(_draws(random.Random(f"{seed}/work/{d}/{r}")) for r in range(len(REPS)))
        for d in range(len(calendar)))
    return World(calendar, tuple(arrivals), presence, draws, warmup_days, days)


def _draws(rng: random.Random) -> tuple[float, ...]:
    return tuple(rng.random() for _ in range(TICKS))


# ---- the work of a day -----------------------------------------------------------------


def moment(world: World, day: int, minute: float) -> datetime:
    return datetime.combine(world.days[day], time(9), ZONE) + timedelta(minutes=minute)


def presence_events(spans: tuple[tuple[float, float], ...], world: World, day: int,
                    now: datetime) -> list[tuple[str, datetime]]:
    """/上班 and /下班 as the product records them, up to now."""
    events = []
    for begin, end in spans:
        events.append(("on", moment(world, day, begin)))
        if end < DAY_MINUTES:
            events.append(("off", moment(world, day, end)))
    return [(kind, at) for kind, at in events if at <= now]


def true_rate(rep: int, industry: str, experience: int) -> float:
    profile = REPS[rep]
    learnt = profile.learn_gain * (1 - math.exp(-experience / LEARN_LEADS))
    return profile.rates[industry] + learnt


def speed_lift(delay_minutes: float) -> float:
    """A later first contact converts less: within 2 working hours, a day, two, or later."""
    if delay_minutes <= 120:
        return 1.0
    if delay_minutes <= DAY_MINUTES:
        return 0.85
    if delay_minutes <= 2 * DAY_MINUTES:
        return 0.7
    return 0.5


def contact_rate(rep: int, open_leads: int) -> float:
    profile = REPS[rep]
    rate = profile.contacts_per_hour * TICK / 60
    if profile.load_slowdown:
        rate /= 1 + min(open_leads / profile.load_slowdown, 1.0)
    return rate


def work_tick(world: World, state: RunState, day: int, tick: int) -> None:
    """Each online rep contacts what the tick's draw allows, urgent leads first."""
    middle = tick * TICK + TICK / 2
    at_w = day * DAY_MINUTES + (tick + 1) * TICK
    at = moment(world, day, (tick + 1) * TICK)
    for rep, spans in enumerate(world.presence[day]):
        queue = state.queues[rep]
        if spans is None or not queue or not any(b <= middle < e for b, e in spans):
            continue
        room = REPS[rep].daily_capacity - state.done_today[rep]
        count = min(_poisson(world.work_draws[day][rep][tick], contact_rate(rep, len(queue))),
                    room, len(queue))
        queue.sort(key=lambda lead: (URGENCY_ORDER[lead.arrival.urgency], lead.assigned_w))
        for lead in queue[:count]:
            _contact(state, lead, at_w, at)
        del queue[:count]


def _contact(state: RunState, lead: SimLead, at_w: float, at: datetime) -> None:
    arrival = lead.arrival
    chance = (true_rate(lead.rep, arrival.industry, state.experience[lead.rep])
              * URGENCY_LIFT[arrival.urgency] * SOURCE_LIFT[arrival.source]
              * speed_lift(at_w - lead.assigned_w))
    lead.contacted_w, lead.contacted_at = at_w, at
    lead.converts = arrival.u_convert < min(chance, 0.95)
    if lead.converts:
        lead.converted_at = at + timedelta(days=arrival.lag_days)
    state.experience[lead.rep] += 1
    state.done_today[lead.rep] += 1


# ---- the policies ----------------------------------------------------------------------

Policy = Callable[[World, RunState, Arrival, list[int], datetime], int]


def choose_static(world: World, state: RunState, arrival: Arrival, available: list[int],
                  now: datetime) -> int:
    """The status quo: the top 3 take STATIC_TOP_SHARE of the leads, the rest go to the new."""
    top = [r for r in available if r in TOP]
    rest = [r for r in available if r not in TOP]
    top_pick = arrival.u_static < STATIC_TOP_SHARE
    pool = (top if top_pick else rest) or top or rest
    share = arrival.u_static / STATIC_TOP_SHARE if top_pick else (
        (arrival.u_static - STATIC_TOP_SHARE) / (1 - STATIC_TOP_SHARE))
    return pool[min(int(share * len(pool)), len(pool) - 1)]


def _rep_state(rep: int, open_leads: int) -> RepState:
    return RepState(member_id=rep + 1, role="rep", status="active", duty=None, duty_at=None,
                    leave_until=None, reachable=True, open_leads=open_leads, cap=None)


def choose_round_robin(world: World, state: RunState, arrival: Arrival, available: list[int],
                       now: datetime) -> int:
    """The product's fallback, handlers.choosing.RoundRobinChoice, over the available reps."""
    team = Team([_rep_state(r, len(state.queues[r])) for r in available],
                state.last_offered, {})
    choice = RoundRobinChoice(team).choose(_lead(arrival), set())
    assert choice is not None
    return choice.member_id - 1


def _lead(arrival: Arrival) -> Lead:
    return Lead(id=arrival.lead_id, urgency=arrival.urgency, industry=arrival.industry,
                source=arrival.source)


def rep_record(world: World, state: RunState, rep: int, day: int,
               now: datetime) -> engine.RepRecord:
    """What handlers.choosing.rep_records reads from the database, from the simulation."""
    since = now - timedelta(days=HISTORY_DAYS)
    history: dict[str, tuple[int, int]] = {}
    for lead in reversed(state.by_rep[rep]):
        if lead.assigned_at < since:
            break
        won = lead.converted_at is not None and lead.converted_at <= now
        if not won and lead.assigned_at > now - timedelta(days=engine.MATURE_DAYS):
            continue  # its outcome is not known yet: the product does not count it
        accepted, converted = history.get(lead.arrival.industry, (0, 0))
        history[lead.arrival.industry] = (accepted + 1, converted + int(won))
    spans = world.presence[day][rep] or ()
    day_start = datetime.combine(world.days[day], time(0), ZONE)
    minutes = engine.online_minutes(presence_events(spans, world, day, now), day_start, now)
    return engine.RepRecord(member_id=rep + 1, name=REPS[rep].name,
                            open_leads=len(state.queues[rep]), history=history,
                            online_minutes=minutes, last_offered=state.last_offered.get(rep + 1))


SETTINGS = LeadSettings()  # the product's defaults: tags, SLA
VOCABULARY = rules.Vocabulary(SETTINGS.industries, SETTINGS.sources)
SEED_RULE = rules.parse_rule(rules.SEED_RULE, VOCABULARY)


def choose_engine(world: World, state: RunState, arrival: Arrival, available: list[int],
                  now: datetime) -> int:
    """handlers.choosing.EngineChoice: the seed rule, then the Chooser, default weights."""
    records = [rep_record(world, state, r, arrival.day, now) for r in available]
    choice = EngineChoice(engine.Chooser(records, dict(engine.DEFAULT_WEIGHTS)),
                          [(1, SEED_RULE)], VOCABULARY)
    picked = choice.choose(_lead(arrival), set())
    assert picked is not None
    outcome = picked.scores.get("rule_outcome") or "no_rule_matched"
    state.rule_outcomes[outcome] = state.rule_outcomes.get(outcome, 0) + 1
    return picked.member_id - 1


CHOOSERS: dict[str, Policy] = {"static": choose_static, "round_robin": choose_round_robin,
                                "engine": choose_engine}


# ---- a run -----------------------------------------------------------------------------


def run(world: World, policy: str) -> RunState:
    """Warm-up under static assignment, then the policy; work goes on until all is contacted."""
    state = RunState()
    for day in range(len(world.days)):
        if day >= world.warmup_days + world.days_measured and not any(state.queues):
            break
        available = [r for r in range(len(REPS)) if world.presence[day][r] is not None]
        pending = list(world.arrivals[day])
        today = policy if day >= world.warmup_days else "static"
        state.done_today = [0] * len(REPS)
        for tick in range(TICKS):
            work_tick(world, state, day, tick)
            while pending and pending[0].minute < (tick + 1) * TICK:
                _assign(world, state, pending.pop(0), available, today)
    return state


def _assign(world: World, state: RunState, arrival: Arrival, available: list[int],
            policy: str) -> None:
    now = moment(world, arrival.day, arrival.minute)
    rep = CHOOSERS[policy](world, state, arrival, available, now)
    spans = world.presence[arrival.day][rep] or ()
    online = any(b <= arrival.minute < e for b, e in spans)
    lead = SimLead(arrival, rep, arrival.day * DAY_MINUTES + arrival.minute, now, online)
    state.leads.append(lead)
    state.queues[rep].append(lead)
    state.by_rep[rep].append(lead)
    state.last_offered[rep + 1] = now


# ---- the report ------------------------------------------------------------------------


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _rate_seen(world: World, state: RunState, rep: int) -> dict[str, float]:
    """The rep's 30-day conversion as the engine reads it at the window's end (converted so
    far ÷ accepted in the last 30 days, unshrunk), against what that cohort finally did."""
    end = moment(world, world.warmup_days + world.days_measured - 1, DAY_MINUTES)
    cohort = [lead for lead in state.by_rep[rep]
              if end - timedelta(days=HISTORY_DAYS) <= lead.assigned_at <= end]
    seen = sum(lead.converted_at is not None and lead.converted_at <= end for lead in cohort)
    return {"rate_seen_by_engine": _share(seen, len(cohort)),
            "rate_eventual": _share(sum(lead.converts for lead in cohort), len(cohort))}


def summarise(world: World, state: RunState) -> dict[str, Any]:
    leads = [lead for lead in state.leads if lead.arrival.measured]
    sla = SETTINGS.sla_working_hours * 60
    fast = [lead for lead in leads
            if lead.contacted_w is not None and lead.contacted_w - lead.assigned_w <= sla]
    won = [lead for lead in leads if lead.converts]
    slow = [lead for lead in leads if lead.contacted_at is None
            or lead.contacted_at - lead.assigned_at > timedelta(hours=48)]
    per_rep = {}
    for rep, profile in enumerate(REPS):
        mine = [lead for lead in leads if lead.rep == rep]
        per_rep[profile.name] = {
            "strong": profile.strong, "leads": len(mine),
            "conversions": sum(lead.converts for lead in mine),
            "contact_2h": _share(sum(lead in fast for lead in mine), len(mine)),
            **_rate_seen(world, state, rep),
            "days_available": sum(world.presence[d][rep] is not None
                                  for d in range(world.warmup_days,
                                                 world.warmup_days + world.days_measured)),
        }
    return {
        "leads": len(leads),
        "top3_lead_share": _share(sum(lead.rep in TOP for lead in leads), len(leads)),
        "top3_conversion_share": _share(sum(lead.rep in TOP for lead in won), len(won)),
        "contact_2h_rate": _share(len(fast), len(leads)),
        "waited_over_48h": _share(len(slow), len(leads)),
        "conversion_rate": _share(len(won), len(leads)),
        "conversions": len(won),
        "offered_while_offline": _share(sum(not lead.rep_online for lead in leads),
                                        len(leads)),
        "never_contacted": sum(lead.contacted_w is None for lead in leads),
        "rule_outcomes": dict(sorted(state.rule_outcomes.items())),
        "per_rep": per_rep,
    }


def simulate(seed: int = 7, days: int = 20, warmup_days: int = 20,
             policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    """Every policy over the same world; the figures per policy."""
    world = build_world(seed, days, warmup_days)
    return {"seed": seed, "days": days, "warmup_days": warmup_days, "reps": len(REPS),
            "policies": {p: summarise(world, run(world, p)) for p in policies}}


def table(result: dict[str, Any]) -> str:
    policies = result["policies"]
    names = list(policies)
    lines = [f"seed {result['seed']}: {result['reps']} reps (3 strong), {result['days']} "
             f"working days after {result['warmup_days']} of static warm-up",
             f"{'':24}" + "".join(f"{n:>14}" for n in names)]
    rows = [("leads", "leads", "{:d}"), ("top-3 share of leads", "top3_lead_share", "{:.1%}"),
            ("top-3 share of conv.", "top3_conversion_share", "{:.1%}"),
            ("first contact ≤ 2 h", "contact_2h_rate", "{:.1%}"),
            ("waited > 48 h (clock)", "waited_over_48h", "{:.1%}"),
            ("offered while offline", "offered_while_offline", "{:.1%}"),
            ("conversion", "conversion_rate", "{:.1%}"), ("conversions", "conversions", "{:d}")]
    for label, key, form in rows:
        lines.append(f"{label:24}" + "".join(f"{form.format(policies[n][key]):>14}"
                                               for n in names))
    lines.append("leads per rep (2 h rate)")
    for rep in REPS:
        cells = "".join(f"{policies[n]['per_rep'][rep.name]['leads']:>7d} "
                        f"({policies[n]['per_rep'][rep.name]['contact_2h']:>4.0%})"
                        for n in names)
        lines.append(f"  {rep.name}{' strong' if rep.strong else ' new':9}{'':8}{cells}")
    for n in names:
        if policies[n]["rule_outcomes"]:
            lines.append(f"seed rule outcomes ({n}): {policies[n]['rule_outcomes']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=20, help="working days reported")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    result = simulate(args.seed, args.days)
    print(table(result))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
