"""The weekly assignment analysis: /分配分析 and the Monday rule-review alert to the admins.

Owns how assignments worked out (first contact within 2 working hours, conversion within
7 days) per rep and per rule; choosing the rep is handlers.assignment's business.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts import alert_admins, resolve
from bot.context import Context
from bot.router import Router
from config.settings import WorkingHours
from scheduler.calendar import NO_EXTRA, CalendarExtra, add_working_minutes
from storage.models import Assignment, Lead, LeadStatusChange, Member, Rule

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

router = Router("analysis")

CONTACT_WORKING_HOURS = 2
CONVERSION_DAYS = 7
WEEK = timedelta(days=7)
REVIEW_KEY = "assignment_review:{week}"  # one episode per week the job runs in
RULE_SOURCE_CHARS = 14  # a rule's text is cut to this on a phone's line

T_USAGE = "用法：/分配分析"
T_SUMMARY = "/分配分析：本周和上周各销售、各规则的分配效果"
T_TITLE = "分配分析（{scope}）"
T_SCOPE_ALL = "全部销售"
T_SCOPE_TEAM = "{name} 的团队"
T_THIS_WEEK = "【本周 {first}–{last}，截至 {now}】"
T_LAST_WEEK = "【上周 {first}–{last}】"
T_EMPTY_WEEK = "暂无已接受的线索。"
T_REP_HEAD = "销售｜条数｜2小时联系｜7天转化"
T_RULE_HEAD = "规则｜条数｜2小时联系｜7天转化"
T_ROW = "{name}｜{n}｜{contact}｜{conversion}"
T_PERCENT = "{value}%"
T_PENDING = "—"
T_FLAG = "⚠"
T_NO_RULE = "无规则"
T_RULE = "#{id} {source}"
T_LEGEND = (
    "⚠ 低于阈值（2小时首次联系 {contact}%，7天转化 {conversion}%）。"
    "分配后满2个工作小时、满7天才计入对应比例，未满的显示为「—」。"
)
T_REVIEW_HEAD = (
    "分配规则复核：以下销售或规则连续两个完整周低于阈值"
    "（2小时首次联系 {contact}%，7天转化 {conversion}%），请复核分配规则和权重。"
)
T_REVIEW_LINE = "· {kind} {name}：{measure} {first}、{second}"
T_REVIEW_WEEK = "{day}起一周 {value}%（{due} 条）"
T_KINDS = {"rep": "销售", "rule": "规则"}
T_MEASURES = {"contact": "2小时首次联系", "conversion": "7天转化"}


# ---- the figures, from plain rows --------------------------------------------------------


@dataclass(slots=True, frozen=True)
class AcceptedOffer:
    """One accepted assignment and what became of its lead, as plain data."""

    member_id: int
    rule_id: int | None
    offered_at: datetime
    contacted_at: datetime | None  # the lead's first contact
    converted_at: datetime | None  # when the lead became `converted`, if it did


@dataclass(slots=True)
class Figures:
    """One rep's or one rule's week. A share counts only the leads whose window is over."""

    leads: int = 0  # accepted offers made in the week
    contact_due: int = 0  # of those, whose 2 working hours are over
    contacted: int = 0  # of those, first contacted within them
    conversion_due: int = 0  # of the offers, whose 7 days are over
    converted: int = 0  # of those, converted within them

    def share(self, measure: str) -> tuple[int, int]:
        """(hits, due) for "contact" or "conversion"."""
        if measure == "contact":
            return self.contacted, self.contact_due
        return self.converted, self.conversion_due

    def percent(self, measure: str) -> int | None:
        """The share in whole percent, rounded half up; None while nothing is due."""
        hits, due = self.share(measure)
        return None if due == 0 else (200 * hits + due) // (2 * due)

    def below(self, measure: str, threshold: int) -> bool:
        """Exactly below the threshold (not after rounding); never while nothing is due."""
        hits, due = self.share(measure)
        return due > 0 and hits * 100 < threshold * due


@dataclass(slots=True)
class Week:
    start: datetime
    by_rep: dict[int, Figures] = field(default_factory=dict)
    by_rule: dict[int | None, Figures] = field(default_factory=dict)

    def groups(self, kind: str) -> dict[int | None, Figures]:
        return self.by_rep if kind == "rep" else self.by_rule  # type: ignore[return-value]


class Thresholds(NamedTuple):
    contact: int
    conversion: int

    def of(self, measure: str) -> int:
        return self.contact if measure == "contact" else self.conversion


def week_start(moment: datetime, zone: ZoneInfo) -> datetime:
    """Monday 00:00 in the team's zone of the week `moment` falls in."""
    day = moment.astimezone(zone).date()
    return datetime.combine(day - timedelta(days=day.weekday()), time(0), zone)


def contact_deadline(
    offered_at: datetime, hours: WorkingHours, zone: ZoneInfo, extra: CalendarExtra = NO_EXTRA,
) -> datetime:
    return add_working_minutes(offered_at, CONTACT_WORKING_HOURS * 60, hours, zone, extra)


def analyse_week(
    offers: Iterable[AcceptedOffer], start: datetime, as_of: datetime, hours: WorkingHours,
    zone: ZoneInfo, extra: CalendarExtra = NO_EXTRA,
) -> Week:
    """The week from `start` (a Monday 00:00 in `zone`) to the next Monday 00:00, as known
    at `as_of`, per rep and per rule (None: the lead matched no rule).

    Which leads count: every accepted assignment offered inside the week, once per
    offer, wherever else its lead went later (a lead two reps accepted in turn counts for
    each of them, measured from each one's offer, and its conversion for both).
    - First contact within 2 working hours: the lead's first contact is at or after the
      offer and no later than 2 working hours after it (the working-day calendar and
      the team's hours: a lead offered Friday 17:30 and contacted Monday 09:30 is on
      time). A contact from before the offer is not this offer's, so it is not on time.
    - 7-day conversion: the lead became `converted` within 7 calendar days of the offer.
    - A lead whose window is not over at `as_of` (2 working hours for the contact, 7 days
      for the conversion) is pending: it is in `leads` but in neither side of that share,
      even if it already succeeded. Counting early successes and not the early failures
      would flatter a young week; so this week's 7-day share is empty until its first
      offers are 7 days old.
    """
    end = start + WEEK
    week = Week(start)
    for offer in offers:
        if not start <= offer.offered_at < end:
            continue
        contact, conversion = _outcome(offer, as_of, hours, zone, extra)
        for figures in (week.by_rep.setdefault(offer.member_id, Figures()),
                        week.by_rule.setdefault(offer.rule_id, Figures())):
            figures.leads += 1
            if contact is not None:
                figures.contact_due += 1
                figures.contacted += contact
            if conversion is not None:
                figures.conversion_due += 1
                figures.converted += conversion
    return week


def _outcome(
    offer: AcceptedOffer, as_of: datetime, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra,
) -> tuple[bool | None, bool | None]:
    """(contacted on time, converted on time); None for a window not over yet."""
    contact = conversion = None
    deadline = contact_deadline(offer.offered_at, hours, zone, extra)
    if deadline <= as_of:
        at = offer.contacted_at
        contact = at is not None and offer.offered_at <= at <= deadline
    closes = offer.offered_at + timedelta(days=CONVERSION_DAYS)
    if closes <= as_of:
        at = offer.converted_at
        conversion = at is not None and offer.offered_at <= at <= closes
    return contact, conversion


def judged_weeks(
    as_of: datetime, hours: WorkingHours, zone: ZoneInfo, extra: CalendarExtra = NO_EXTRA,
) -> dict[str, tuple[datetime, datetime]]:
    """Per measure, the two latest weeks (older first) whose every window is over.

    A week's contact share is final 2 working hours after it ends (Monday 11:00 with the
    default hours); its 7-day conversion share a week after it ends. So on a Monday
    afternoon the contact share is judged on the last two weeks, the conversion share on
    the two before the last.
    """
    def final_at(measure: str, start: datetime) -> datetime:
        if measure == "contact":
            return contact_deadline(start + WEEK, hours, zone, extra)
        return start + WEEK + timedelta(days=CONVERSION_DAYS)

    judged = {}
    for measure in ("contact", "conversion"):
        start = week_start(as_of, zone) - WEEK
        while final_at(measure, start) > as_of:
            start -= WEEK
        judged[measure] = (start - WEEK, start)
    return judged


@dataclass(slots=True, frozen=True)
class Finding:
    """A rep or rule below a threshold in both weeks judged for that measure."""

    kind: str  # "rep" or "rule"
    subject: int | None  # the member id or rule id (None: no rule)
    measure: str  # "contact" or "conversion"
    weeks: tuple[Week, Week]


def findings(
    offers: list[AcceptedOffer], as_of: datetime, hours: WorkingHours, zone: ZoneInfo,
    thresholds: Thresholds, extra: CalendarExtra = NO_EXTRA,
) -> list[Finding]:
    """Every rep and rule below either threshold two judged weeks in a row. A week with
    nothing due for it (no leads, or none whose window is over) is never below."""
    found = []
    for measure, starts in judged_weeks(as_of, hours, zone, extra).items():
        older, newer = (analyse_week(offers, s, as_of, hours, zone, extra) for s in starts)
        threshold = thresholds.of(measure)
        for kind in ("rep", "rule"):
            both = older.groups(kind).keys() & newer.groups(kind).keys()
            for subject in both:
                if all(w.groups(kind)[subject].below(measure, threshold)
                       for w in (older, newer)):
                    found.append(Finding(kind, subject, measure, (older, newer)))
    return sorted(found, key=lambda f: (f.kind != "rep", f.subject is None, f.subject or 0))


# ---- the words ----------------------------------------------------------------------------


class Names(NamedTuple):
    reps: dict[int, str]
    rules: dict[int, str]  # the rule's text as the admin typed it

    def label(self, kind: str, subject: int | None) -> str:
        if kind == "rep":
            return self.reps.get(subject or 0, f"#{subject}")
        if subject is None:
            return T_NO_RULE
        source = self.rules.get(subject, "")
        if len(source) > RULE_SOURCE_CHARS:
            source = source[:RULE_SOURCE_CHARS] + "…"
        return T_RULE.format(id=subject, source=source).strip()


def _cell(figures: Figures, measure: str, threshold: int) -> str:
    value = figures.percent(measure)
    if value is None:
        return T_PENDING
    text = T_PERCENT.format(value=value)
    return text + T_FLAG if figures.below(measure, threshold) else text


def render_week(heading: str, week: Week, names: Names, thresholds: Thresholds) -> list[str]:
    lines = [heading]
    if not week.by_rep:
        return [*lines, T_EMPTY_WEEK]
    for head, kind in ((T_REP_HEAD, "rep"), (T_RULE_HEAD, "rule")):
        lines.append(head)
        rows = [(names.label(kind, subject), figures)
                for subject, figures in week.groups(kind).items()]
        if kind == "rep":
            rows.sort(key=lambda row: row[0])
        else:
            rows.sort(key=lambda row: (row[0] == T_NO_RULE, row[0]))
        for name, figures in rows:
            lines.append(T_ROW.format(
                name=name, n=figures.leads,
                contact=_cell(figures, "contact", thresholds.contact),
                conversion=_cell(figures, "conversion", thresholds.conversion)))
    return lines


def render_review(found: list[Finding], names: Names, thresholds: Thresholds) -> str:
    lines = [T_REVIEW_HEAD.format(contact=thresholds.contact,
                                  conversion=thresholds.conversion)]
    for finding in found:
        older, newer = (_review_week(w, finding) for w in finding.weeks)
        lines.append(T_REVIEW_LINE.format(
            kind=T_KINDS[finding.kind], name=names.label(finding.kind, finding.subject),
            measure=T_MEASURES[finding.measure], first=older, second=newer))
    return "\n".join(lines)


def _review_week(week: Week, finding: Finding) -> str:
    figures = week.groups(finding.kind)[finding.subject]
    return T_REVIEW_WEEK.format(day=_day(week.start), value=figures.percent(finding.measure),
                                due=figures.share(finding.measure)[1])


def _day(moment: datetime) -> str:
    return moment.strftime("%m-%d")


# ---- the data -----------------------------------------------------------------------------

ACCEPTED_STATES = ("accepted", "sla_missed")


def _accepted_in(
    since: datetime, until: datetime, member_ids: set[int] | None
) -> list[ColumnElement[bool]]:
    # An offer accepted and later taken away for a missed first contact still counts,
    # as the late contact it was.
    where = [Assignment.state.in_(ACCEPTED_STATES), Assignment.offered_at >= since,
             Assignment.offered_at < until]
    if member_ids is not None:
        where.append(Assignment.member_id.in_(member_ids))
    return where


async def load_offers(
    session: AsyncSession, since: datetime, until: datetime,
    member_ids: set[int] | None = None,
) -> list[AcceptedOffer]:
    """The accepted assignments offered in [since, until), of these reps or of everyone."""
    where = _accepted_in(since, until, member_ids)
    rows = (await session.execute(
        select(Assignment.lead_id, Assignment.member_id, Assignment.rule_id,
               Assignment.offered_at, Lead.contacted_at, Lead.status)
        .join(Lead, Lead.id == Assignment.lead_id).where(*where)
    )).all()
    converted: dict[int, datetime] = {}
    changes = await session.execute(
        select(LeadStatusChange.lead_id, LeadStatusChange.at)
        .join(Assignment, Assignment.lead_id == LeadStatusChange.lead_id)
        .where(LeadStatusChange.to_status == "converted", *where)
        .order_by(LeadStatusChange.at)
    )
    for lead_id, at in changes.all():
        converted.setdefault(lead_id, at)
    return [
        AcceptedOffer(member_id=row.member_id, rule_id=row.rule_id, offered_at=row.offered_at,
                      contacted_at=row.contacted_at,
                      converted_at=converted.get(row.lead_id) if row.status == "converted"
                      else None)
        for row in rows
    ]


async def load_names(session: AsyncSession, offers: list[AcceptedOffer]) -> Names:
    member_ids = {o.member_id for o in offers}
    rule_ids = {o.rule_id for o in offers if o.rule_id is not None}
    reps = dict((await session.execute(
        select(Member.id, Member.name).where(Member.id.in_(member_ids))
    )).all()) if member_ids else {}
    rules = dict((await session.execute(
        select(Rule.id, Rule.source).where(Rule.id.in_(rule_ids))
    )).all()) if rule_ids else {}
    return Names(reps, rules)


def thresholds_of(rt: Runtime) -> Thresholds:
    leads = rt.settings.leads
    return Thresholds(leads.analysis_contact_percent, leads.analysis_conversion_percent)


# ---- the command and the job --------------------------------------------------------------


@router.command("分配分析", roles={"admin", "manager"}, usage=T_USAGE, summary=T_SUMMARY)
async def assignment_analysis(ctx: Context, args: str) -> None:
    """An admin sees every rep; a manager the reps they manage (and the rules as those
    reps' leads met them)."""
    zone, hours = ctx.settings.zone, ctx.settings.leads.hours
    this_week = week_start(ctx.now, zone)
    last_week = this_week - WEEK
    team = None
    scope = T_SCOPE_ALL
    if ctx.member.role != "admin":
        team = set((await ctx.session.scalars(
            select(Member.id).where(Member.manager_id == ctx.member.id)
        )).all())
        scope = T_SCOPE_TEAM.format(name=ctx.member.name)
    offers = await load_offers(ctx.session, last_week, this_week + WEEK, team)
    names = await load_names(ctx.session, offers)
    thresholds = thresholds_of(ctx.rt)
    extra = ctx.rt.calendar_extra

    def heading(template: str, start: datetime) -> str:
        return template.format(first=_day(start), last=_day(start + timedelta(days=6)),
                               now=ctx.now.astimezone(zone).strftime("%m-%d %H:%M"))

    lines = [T_TITLE.format(scope=scope)]
    for template, start in ((T_THIS_WEEK, this_week), (T_LAST_WEEK, last_week)):
        week = analyse_week(offers, start, ctx.now, hours, zone, extra)
        lines += render_week(heading(template, start), week, names, thresholds)
    lines.append(T_LEGEND.format(contact=thresholds.contact,
                                 conversion=thresholds.conversion))
    await ctx.reply("\n".join(lines))


async def review_assignments(rt: Runtime) -> list[Finding]:
    """The weekly job: tell the admins once about every rep and rule below a threshold in
    both judged weeks; the episode closes when a week's run finds nobody below."""
    now = rt.now()
    zone, hours = rt.settings.zone, rt.settings.leads.hours
    thresholds = thresholds_of(rt)
    judged = judged_weeks(now, hours, zone, rt.calendar_extra)
    since = min(older for older, _ in judged.values())
    until = max(newer for _, newer in judged.values()) + WEEK
    this_week = week_start(now, zone)
    key = REVIEW_KEY.format(week=this_week.date().isoformat())
    opened = False
    async with rt.sessions() as session, session.begin():
        offers = await load_offers(session, since, until)
        found = findings(offers, now, hours, zone, thresholds, rt.calendar_extra)
        # Last week's episode is over either way: this week's run tells its own.
        await resolve(session, REVIEW_KEY.format(week=(this_week - WEEK).date().isoformat()))
        if found:
            text = render_review(found, await load_names(session, offers), thresholds)
            opened = await alert_admins(session, rt, key, text)
        else:
            await resolve(session, key)
    if opened:
        rt.outbox.wake()
    log.info("assignment analysis: %d offers, %d findings", len(offers), len(found))
    return found
