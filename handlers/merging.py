"""Merging duplicate customers: the review's proposals, the merge itself and its undo.

Owns choosing the survivor, the surviving values, the comparison of a group, the review
day, the duplicate rate, and the database work of a scan's proposals, a merge and an
undo. Finding the duplicates is handlers.matching's job; what is said in chat and on
cards is handlers.merge_chat's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import audit
from handlers.matching import MERGE_HOPS, Group, groups_among
from scheduler.calendar import NO_EXTRA, CalendarExtra, add_working_days
from storage.models import (
    Customer,
    FollowUp,
    Lead,
    Member,
    Merge,
    MergeProposal,
    MergeScan,
    NotDuplicate,
)

log = logging.getLogger(__name__)

# The monthly review: the 5th at 10:00 team time, or the next working day at 10:00.
REVIEW_DAY = 5
REVIEW_TIME = time(10, 0)
# A scan still "running" after this long died with its process; another may start.
SCAN_STALE = timedelta(hours=1)
IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound on variables

# The customer's fields a merge compares and fills, in the order a comparison shows them.
FIELDS = ("company", "contact", "phone", "email", "industry", "owner_id")
# Rows that hang on a customer and move to the survivor (opportunities, minutes and
# check-ins join this list when they get a customer column).
MOVED = {"leads": Lead, "follow_ups": FollowUp}


class MergeRefused(Exception):
    """A merge or undo that cannot be done as asked; `reason` says which case."""

    def __init__(self, reason: str, detail: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# ---- pure: records, survivor, surviving values, comparison -------------------------------


@dataclass(slots=True, frozen=True)
class Record:
    """One customer of a group as the review sees it: its fields and its history."""

    id: int
    values: dict[str, Any]
    status: str
    created_at: datetime
    leads: int = 0
    follow_ups: int = 0
    last_activity: datetime | None = None

    @property
    def history(self) -> int:
        return self.leads + self.follow_ups


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def ranked(records: Sequence[Record]) -> list[Record]:
    """The records best survivor first: the most history (leads and follow-ups), then the
    most recent activity, then the oldest record, then the lowest number.

    The record the team has worked most is the one people know; the oldest breaks a tie
    because its number is the one quoted longest.
    """
    def key(record: Record) -> tuple[int, float, float, int]:
        last = record.last_activity.timestamp() if record.last_activity else float("-inf")
        return (-record.history, -last, record.created_at.timestamp(), record.id)

    return sorted(records, key=key)


def choose_survivor(records: Sequence[Record]) -> int:
    if not records:
        raise ValueError("no records to choose from")
    return ranked(records)[0].id


def survivor_basis(records: Sequence[Record], survivor_id: int) -> str:
    """Why the survivor leads the ranking: history | activity | oldest | number (the rule
    that told it from the runner-up)."""
    order = ranked(records)
    best = next(r for r in order if r.id == survivor_id)
    runner_up = next((r for r in order if r.id != survivor_id), None)
    if runner_up is None or best.history != runner_up.history:
        return "history"
    if best.last_activity != runner_up.last_activity:
        return "activity"
    if best.created_at != runner_up.created_at:
        return "oldest"
    return "number"


def surviving_values(records: Sequence[Record], survivor_id: int) -> dict[str, Any]:
    """Each field's value after the merge: the survivor's own, or where it is empty the
    first non-empty value among the others in survivor order."""
    order = ranked(records)
    order.sort(key=lambda r: r.id != survivor_id)  # stable: the survivor first
    values: dict[str, Any] = {}
    for name in FIELDS:
        values[name] = next((r.values.get(name) for r in order
                             if not is_empty(r.values.get(name))), None)
    return values


def values_to_keep(proposed: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """What each field keeps at the merge: the value the proposal showed, and where it
    showed none, a value a record has gained since (surviving_values of the records now)."""
    return {name: proposed.get(name) if not is_empty(proposed.get(name)) else live.get(name)
            for name in FIELDS}


def _same(values: Iterable[Any]) -> bool:
    seen = {v.strip() if isinstance(v, str) else v for v in values}
    seen = {None if is_empty(v) else v for v in seen}
    return len(seen) <= 1


@dataclass(slots=True, frozen=True)
class FieldRow:
    """One line of the comparison: the values side by side, the value that survives."""

    name: str
    values: tuple[Any, ...]  # one per record, in the records' order
    differs: bool
    surviving: Any


def compare(records: Sequence[Record], values: dict[str, Any]) -> list[FieldRow]:
    """The group field by field; a field differs when its values are not all the same
    (an empty value beside a filled one differs too)."""
    return [FieldRow(name, tuple(r.values.get(name) for r in records),
                     not _same(r.values.get(name) for r in records), values.get(name))
            for name in FIELDS]


def signature(ids: Iterable[int]) -> str:
    """The group's fixed-size key: SHA-256 of its sorted ids."""
    text = ",".join(str(i) for i in sorted(set(ids)))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def remembered(ids: Iterable[int], not_duplicates: Collection[frozenset[int]]) -> bool:
    """Whether an admin said this very group is not one customer.

    Only the same records: a group with one record more or fewer is another question
    (a true pair inside a chain an admin turned down is asked once the chain is split),
    and a split (apart) is what keeps records out of one group for good.
    """
    return frozenset(ids) in not_duplicates


def parts_signature(parts: Iterable[Iterable[int]]) -> str:
    """A split's fixed-size key: SHA-256 of its parts' sorted ids ("8,9|14,15"), which no
    group's key can equal."""
    text = "|".join(sorted(",".join(str(i) for i in sorted(set(part))) for part in parts))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def apart_from(splits: Iterable[Sequence[Iterable[int]]]) -> dict[int, frozenset[int]]:
    """customer → the customers an admin split apart from it (every record of one part of
    a split from every record of its other parts)."""
    apart: dict[int, set[int]] = {}
    for parts in splits:
        sets = [frozenset(part) for part in parts]
        for n, part in enumerate(sets):
            others = frozenset().union(*(p for m, p in enumerate(sets) if m != n))
            for i in part:
                apart.setdefault(i, set()).update(others)
    return {i: frozenset(others) for i, others in apart.items()}


def regroup(group: Group, apart: Mapping[int, frozenset[int]]) -> list[Group]:
    """The group without joining records split apart: its pairs taken surest first (the
    score, then the lowest numbers), each skipped when it would put two records split apart
    into one group; the groups of two or more left, in the order of their smallest id. A
    group with no record split from another of it stays as it is."""
    ids = set(group.customer_ids)
    if not any(apart.get(i, frozenset()) & ids for i in ids):
        return [group]
    joined: dict[int, frozenset[int]] = {i: frozenset({i}) for i in ids}
    kept = []
    for pair in sorted(group.pairs, key=lambda p: (-p[3], p[0], p[1])):
        a, b = joined[pair[0]], joined[pair[1]]
        if a != b:
            if any(apart.get(i, frozenset()) & b for i in a):
                continue
            together = a | b
            joined.update(dict.fromkeys(together, together))
        kept.append(pair)
    out: dict[int, Group] = {}
    for pair in sorted(kept):
        members = joined[pair[0]]
        out.setdefault(min(members), Group(tuple(sorted(members)))).pairs.append(pair)
    return [out[root] for root in sorted(out)]


# ---- pure: the review day and the duplicate rate ------------------------------------------


def review_day(year: int, month: int, extra: CalendarExtra = NO_EXTRA) -> date:
    """The month's review day: the 5th, or the first working day after it."""
    return add_working_days(date(year, month, REVIEW_DAY), 0, extra)


def review_period(local_now: datetime, extra: CalendarExtra = NO_EXTRA) -> str | None:
    """The month whose review is due at this local time ("2026-10"), or None before the
    review day's 10:00. After it the review stays due until it has run (a bot that was
    down that morning catches up), so the caller checks whether it ran."""
    day = review_day(local_now.year, local_now.month, extra)
    if (local_now.date(), local_now.time()) < (day, REVIEW_TIME):
        return None
    return f"{local_now.year:04d}-{local_now.month:02d}"


def counted(groups: Iterable[Iterable[int]], active: set[int]) -> set[int]:
    """The customers still in a duplicate group: of each group the active members, when
    two or more are left; each customer once, however many groups hold it (an undone
    merge's group and an open proposal may share records), so never more than `active`."""
    found: set[int] = set()
    for group in groups:
        live = {i for i in group if i in active}
        if len(live) >= 2:
            found |= live
    return found


def percent(part: int, whole: int) -> str:
    return f"{(100 * part / whole) if whole else 0.0:.1f}%"


# ---- reading --------------------------------------------------------------------------------


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start:start + IN_CHUNK]


def snapshot(customer: Customer) -> dict[str, Any]:
    values = {name: getattr(customer, name) for name in FIELDS}
    return values | {"status": customer.status, "merged_into_id": customer.merged_into_id}


async def load_records(session: AsyncSession, ids: Sequence[int]) -> dict[int, Record]:
    """The customers with their history: leads, follow-ups on those leads and on the
    customer itself, and the latest of their activity."""
    ids = sorted(set(ids))
    customers: dict[int, Customer] = {}
    history: dict[int, list[Any]] = {i: [0, 0, None] for i in ids}

    def later(a: datetime | None, b: datetime | None) -> datetime | None:
        return max((x for x in (a, b) if x is not None), default=None)

    for chunk in _chunks(ids):
        found = await session.scalars(select(Customer).where(Customer.id.in_(chunk)))
        customers.update({c.id: c for c in found.all()})
        leads = await session.execute(
            select(Lead.customer_id, func.count(),
                   func.max(func.coalesce(Lead.last_activity_at, Lead.created_at)))
            .where(Lead.customer_id.in_(chunk)).group_by(Lead.customer_id))
        for customer_id, count, last in leads.all():
            history[customer_id][0] += count
            history[customer_id][2] = later(history[customer_id][2], last)
        notes = await session.execute(
            select(Lead.customer_id, func.count(FollowUp.id), func.max(FollowUp.at))
            .join(FollowUp, FollowUp.lead_id == Lead.id)
            .where(Lead.customer_id.in_(chunk)).group_by(Lead.customer_id))
        direct = await session.execute(
            select(FollowUp.customer_id, func.count(), func.max(FollowUp.at))
            .where(FollowUp.customer_id.in_(chunk)).group_by(FollowUp.customer_id))
        for customer_id, count, last in [*notes.all(), *direct.all()]:
            history[customer_id][1] += count
            history[customer_id][2] = later(history[customer_id][2], last)
    return {
        c.id: Record(c.id, {name: getattr(c, name) for name in FIELDS}, c.status,
                     c.created_at, history[c.id][0], history[c.id][1], history[c.id][2])
        for c in customers.values()
    }


@dataclass(slots=True, frozen=True)
class Remembered:
    """What the admins said: groups that are not one customer (不是重复), and for each
    customer split from others (/拆分), those it is not."""

    groups: frozenset[frozenset[int]] = frozenset()
    apart: Mapping[int, frozenset[int]] = field(default_factory=dict)


async def remembered_answers(session: AsyncSession) -> Remembered:
    """The not_duplicates rows: a flat list is a group, a list of lists a split's parts."""
    groups, splits = set(), []
    for ids in (await session.scalars(select(NotDuplicate.member_ids))).all():
        if ids and isinstance(ids[0], list):
            splits.append([[int(i) for i in part] for part in ids])
        else:
            groups.add(frozenset(int(i) for i in ids))
    return Remembered(frozenset(groups), apart_from(splits))


async def active_count(session: AsyncSession) -> int:
    return await session.scalar(
        select(func.count()).select_from(Customer).where(Customer.status != "merged")) or 0


# ---- a scan's proposals ---------------------------------------------------------------------


@dataclass(slots=True)
class ScanResult:
    scan: MergeScan
    open: list[MergeProposal] = field(default_factory=list)  # every open proposal, in order
    new: int = 0  # of those, proposed by this scan
    superseded: list[MergeProposal] = field(default_factory=list)
    remembered: int = 0  # groups left out as not duplicates


async def running_scan(session: AsyncSession, now: datetime) -> MergeScan | None:
    return await session.scalar(
        select(MergeScan).where(MergeScan.state == "running",
                                MergeScan.started_at > now - SCAN_STALE)
        .order_by(MergeScan.id.desc()).limit(1))


async def claim_scan(
    session: AsyncSession, now: datetime, *, trigger: str, actor: Member | None = None,
    period: str | None = None,
) -> MergeScan | None:
    """Start a scan, or None when one is running or this month's review ran already.

    A monthly review claims its month; one that failed or died frees the month again, so
    the next day's check retries it.
    """
    if await running_scan(session, now) is not None:
        return None
    if period is not None:
        earlier = await session.scalar(select(MergeScan).where(MergeScan.period == period))
        if earlier is not None and earlier.state == "done":
            return None
        if earlier is not None:
            earlier.period = None
            earlier.state = "failed"
            await session.flush()
    scan = MergeScan(trigger=trigger, period=period, actor_id=actor.id if actor else None,
                     state="running", started_at=now, groups=[])
    session.add(scan)
    await session.flush()
    return scan


def _reasons(group: Group) -> list[str]:
    found = {reason for _, _, reasons, _ in group.pairs for reason in reasons}
    return sorted(found)


def _score(group: Group) -> int:
    return max((score for *_, score in group.pairs), default=0)


def _priority(proposal: MergeProposal) -> tuple[int, int, int]:
    """Cards go out surest first: the score, then the size of the group, then the oldest."""
    return (-proposal.score, -len(proposal.member_ids), proposal.id)


@dataclass(slots=True)
class Found:
    """What a scan read, in its read-only snapshot: the groups, their records, the
    admins' remembered answers and the open proposals (signature → id)."""

    groups: list[Group]
    records: dict[int, Record]
    active: int
    answers: Remembered
    open: dict[str, int]


async def read_scan(session: AsyncSession, groups: Sequence[Group]) -> Found:
    """Everything the scan's proposals are decided from, read before anything is
    written, so that the writes after it are short."""
    ids = [i for g in groups for i in g.customer_ids]
    open_rows = await session.execute(
        select(MergeProposal.signature, MergeProposal.id)
        .where(MergeProposal.state == "proposed"))
    return Found(list(groups), await load_records(session, ids), await active_count(session),
                 await remembered_answers(session), {key: i for key, i in open_rows.all()})


@dataclass(slots=True)
class ScanPlan:
    """A scan's proposals before they are written: the new ones as rows, the open ones
    found again, the open ones not found again."""

    new: list[dict[str, Any]] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    remembered: int = 0  # groups left out as not duplicates


def plan_scan(found: Found, scan_id: int, now: datetime) -> ScanPlan:
    """A proposal per group (records split apart kept apart) not remembered as not
    duplicates, unless one is open for the same records already; open proposals whose
    group was not found again go."""
    plan = ScanPlan()
    seen: set[str] = set()
    for group in (part for found_group in found.groups
                  for part in regroup(found_group, found.answers.apart)):
        if remembered(group.customer_ids, found.answers.groups):
            plan.remembered += 1
            continue
        members = [found.records[i] for i in group.customer_ids
                   if i in found.records and found.records[i].status != "merged"]
        if len(members) < 2:
            continue  # merged or deleted since the matcher read it
        key = signature(r.id for r in members)
        if key in seen:
            continue
        seen.add(key)
        if key in found.open:
            plan.kept.append(found.open[key])
            continue
        plan.new.append(proposal_row(group, members, scan_id, now))
    plan.gone = sorted(i for key, i in found.open.items() if key not in seen)
    return plan


def proposal_row(
    group: Group, members: Sequence[Record], scan_id: int, now: datetime
) -> dict[str, Any]:
    """A new proposal for the group's records (`members`, the active ones)."""
    survivor = choose_survivor(members)
    return {"scan_id": scan_id, "member_ids": sorted(r.id for r in members),
            "signature": signature(r.id for r in members), "survivor_id": survivor,
            "reasons": _reasons(group), "score": _score(group),
            "values": surviving_values(members, survivor), "state": "proposed",
            "created_at": now}


async def insert_proposals(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """One chunk of a scan's new proposals, in one statement (Core: no per-object work)."""
    if rows:
        await session.execute(insert(MergeProposal), list(rows))


async def _proposals(session: AsyncSession, ids: Sequence[int]) -> list[MergeProposal]:
    found: list[MergeProposal] = []
    for chunk in _chunks(sorted(ids)):
        found += (await session.scalars(
            select(MergeProposal).where(MergeProposal.id.in_(chunk),
                                        MergeProposal.state == "proposed"))).all()
    return found


async def finish_scan(
    session: AsyncSession, scan: MergeScan, plan: ScanPlan, found: Found, now: datetime
) -> ScanResult:
    """The scan's last step: the open proposals as they stand now (a tap may have decided
    one meanwhile), the ones not found again superseded, the scan's figures."""
    result = ScanResult(scan, new=len(plan.new), remembered=plan.remembered)
    mine = (await session.scalars(
        select(MergeProposal).where(MergeProposal.scan_id == scan.id,
                                    MergeProposal.state == "proposed"))).all()
    result.open = sorted([*mine, *await _proposals(session, plan.kept)], key=_priority)
    result.superseded = await _proposals(session, plan.gone)
    for proposal in result.superseded:
        proposal.state, proposal.decided_at = "superseded", now
    scan.active = found.active
    scan.grouped = sum(len(p.member_ids) for p in result.open)
    scan.remembered = result.remembered
    scan.groups = [list(p.member_ids) for p in result.open]
    scan.state, scan.finished_at = "done", now
    return result


async def _take(
    session: AsyncSession, proposal: MergeProposal, state: str, actor: Member, now: datetime,
    *, was: str = "proposed",
) -> None:
    """Decide a proposal with one conditional UPDATE: only one decision can win."""
    taken = await session.execute(
        update(MergeProposal)
        .where(MergeProposal.id == proposal.id, MergeProposal.state == was)
        .values(state=state, decided_by_id=actor.id, decided_at=now)
        .execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        raise MergeRefused("decided")
    await session.refresh(proposal)


async def remember_not_duplicate(
    session: AsyncSession, proposal: MergeProposal, actor: Member, now: datetime
) -> None:
    """The admin's "not a duplicate": the proposal is decided and its group remembered.
    Raises MergeRefused ("decided") when another admin decided it meanwhile."""
    await _take(session, proposal, "notdup", actor, now)
    audit(session, actor, "customer.notdup", "proposal", proposal.id, {"state": "proposed"},
          {"state": "notdup", "customers": sorted(proposal.member_ids)}, now)
    key = signature(proposal.member_ids)
    if await session.scalar(select(NotDuplicate.id).where(NotDuplicate.signature == key)):
        return
    session.add(NotDuplicate(signature=key, member_ids=sorted(proposal.member_ids),
                             proposal_id=proposal.id, decided_by_id=actor.id, at=now))


# ---- a split -----------------------------------------------------------------------------------

SPLITTABLE = ("proposed", "notdup")


def split_parts(member_ids: Iterable[int], named: Iterable[int]
                ) -> tuple[list[int], list[int]]:
    """The proposal's records as (rest, split off) when the admin named some of them, not
    all; raises MergeRefused ("outside", ids not in it) or ("all")."""
    members, wanted = sorted({int(i) for i in member_ids}), sorted(set(named))
    outside = [i for i in wanted if i not in members]
    if outside:
        raise MergeRefused("outside", outside)
    rest = [i for i in members if i not in wanted]
    if not rest:
        raise MergeRefused("all")
    return rest, wanted


@dataclass(slots=True)
class Split:
    proposal: MergeProposal
    rest: list[int]
    split: list[int]
    new: list[MergeProposal] = field(default_factory=list)  # proposed at once
    open: list[MergeProposal] = field(default_factory=list)  # open already for a part


async def split_proposal(
    session: AsyncSession, proposal: MergeProposal, named: Sequence[int], actor: Member,
    now: datetime,
) -> Split:
    """The admin's "these records are not the same customer as the rest": the proposal is
    closed as split, the split remembered (no scan joins the parts again), and the groups
    still found inside each part proposed at once, under the proposal's scan.

    An open proposal may be split, and one turned down as 不是重复 (the way to a true pair
    inside a chained group). Raises MergeRefused ("outside", ids), ("all"), or
    ("decided") when the proposal was decided meanwhile or cannot be split.
    """
    rest, split = split_parts(proposal.member_ids, named)
    if proposal.state not in SPLITTABLE:
        raise MergeRefused("decided")
    was = proposal.state
    await _take(session, proposal, "split", actor, now, was=was)
    parts = [rest, split]
    key = parts_signature(parts)
    if not await session.scalar(select(NotDuplicate.id).where(NotDuplicate.signature == key)):
        session.add(NotDuplicate(signature=key, member_ids=parts, proposal_id=proposal.id,
                                 decided_by_id=actor.id, at=now))
        await session.flush()
    result = Split(proposal, rest, split)
    answers = await remembered_answers(session)
    groups = [group for part in parts for found in await groups_among(session, part)
              for group in regroup(found, answers.apart)
              if not remembered(group.customer_ids, answers.groups)]
    records = await load_records(session, [i for g in groups for i in g.customer_ids])
    for group in groups:
        row = proposal_row(group, [records[i] for i in group.customer_ids],
                           proposal.scan_id, now)
        already = await session.scalar(
            select(MergeProposal).where(MergeProposal.signature == row["signature"],
                                        MergeProposal.state == "proposed"))
        if already is not None:
            result.open.append(already)
            continue
        created = MergeProposal(**row)
        session.add(created)
        await session.flush()
        result.new.append(created)
    audit(session, actor, "customer.split", "proposal", proposal.id,
          {"state": was, "customers": sorted(proposal.member_ids)},
          {"state": "split", "parts": parts, "proposals": [p.id for p in result.new],
           "open": [p.id for p in result.open]}, now)
    log.info("proposal %s split: %s apart from %s; new proposals %s", proposal.id, split,
             rest, [p.id for p in result.new])
    return result


# ---- the merge and its undo -----------------------------------------------------------------


async def _locked_customers(
    session: AsyncSession, ids: Sequence[int], lock: bool
) -> dict[int, Customer]:
    query = select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)
    if lock:
        query = query.with_for_update()
    return {c.id: c for c in (await session.scalars(query)).all()}


async def _move(
    session: AsyncSession, model: Any, sources: Sequence[int], target: int
) -> list[list[int]]:
    """Point every row of `model` on one of `sources` at `target`; [[row, from], …]."""
    rows = (await session.execute(
        select(model.id, model.customer_id).where(model.customer_id.in_(sources))
        .order_by(model.id))).all()
    if rows:
        await session.execute(update(model).where(model.customer_id.in_(sources))
                              .values(customer_id=target))
    return [[row_id, source] for row_id, source in rows]


async def merge_proposal(
    session: AsyncSession, proposal: MergeProposal, actor: Member, now: datetime, *,
    lock: bool = False,
) -> Merge:
    """Merge the proposal's group into its survivor, in the caller's transaction.

    Raises MergeRefused before it writes anything: ("changed") when a record is gone or
    merged elsewhere, ("decided") when another admin decided the proposal meanwhile.
    With `lock` (PostgreSQL) the group's rows are locked first, so of two admins tapping
    at once the second waits and then finds the records merged.
    """
    ids = sorted(int(i) for i in proposal.member_ids)
    customers = await _locked_customers(session, ids, lock)
    if len(customers) != len(ids) or any(c.status == "merged" for c in customers.values()):
        raise MergeRefused("changed")
    await _take(session, proposal, "merged", actor, now)
    survivor = customers[proposal.survivor_id]
    others = [customers[i] for i in ids if i != survivor.id]

    merged_before = {str(c.id): snapshot(c) for c in others}
    records = await load_records(session, ids)
    keep = values_to_keep(proposal.values or {},
                          surviving_values(list(records.values()), survivor.id))
    before, after = {}, {}
    for name in FIELDS:
        value = keep.get(name)
        if is_empty(getattr(survivor, name)) and not is_empty(value):
            before[name], after[name] = getattr(survivor, name), value
            setattr(survivor, name, value)
    survivor.updated_at = now
    sources = [c.id for c in others]
    moved = {table: await _move(session, model, sources, survivor.id)
             for table, model in MOVED.items()}
    for customer in others:
        customer.status, customer.merged_into_id, customer.updated_at = "merged", survivor.id, now

    merge = Merge(proposal_id=proposal.id, survivor_id=survivor.id, merged_ids=sources,
                  survivor_before=before, survivor_after=after, merged_before=merged_before,
                  moved=moved, actor_id=actor.id, at=now)
    session.add(merge)
    await session.flush()
    audit(session, actor, "customer.merge", "customer", survivor.id,
          {"customers": merged_before, "survivor": before},
          {"merge_id": merge.id, "proposal_id": proposal.id, "survivor_id": survivor.id,
           "merged_ids": sources, "filled": after, "moved": moved}, now)
    log.info("merge %s: customers %s into %s, %s", merge.id, sources, survivor.id,
             {table: len(rows) for table, rows in moved.items()})
    return merge


async def _later_merge(session: AsyncSession, merge: Merge) -> Merge | None:
    """A merge done after this one, not undone, that involves one of its customers."""
    mine = {merge.survivor_id, *merge.merged_ids}
    later = (await session.scalars(
        select(Merge).where(Merge.id > merge.id, Merge.undone_at.is_(None))
        .order_by(Merge.id))).all()
    return next((m for m in later if mine & {m.survivor_id, *m.merged_ids}), None)


async def undo_merge(
    session: AsyncSession, merge: Merge, actor: Member, now: datetime, *, lock: bool = False,
) -> list[str]:
    """Put everything back as it was before the merge; returns the survivor's fields kept
    as they are because someone changed them since (restored only where untouched).

    Raises MergeRefused ("undone") when it was undone already, ("later", merge) when a
    later merge involves its customers and must be undone first.
    """
    if merge.undone_at is not None:
        raise MergeRefused("undone")
    later = await _later_merge(session, merge)
    if later is not None:
        raise MergeRefused("later", later)
    taken = await session.execute(
        update(Merge).where(Merge.id == merge.id, Merge.undone_at.is_(None))
        .values(undone_at=now, undone_by_id=actor.id)
        .execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        raise MergeRefused("undone")
    await session.refresh(merge)
    customers = await _locked_customers(
        session, sorted({merge.survivor_id, *merge.merged_ids}), lock)
    survivor = customers[merge.survivor_id]

    kept = []
    for name, value in merge.survivor_after.items():
        if getattr(survivor, name) == value:
            setattr(survivor, name, merge.survivor_before.get(name))
        else:
            kept.append(name)
    survivor.updated_at = now
    for customer_id, values in merge.merged_before.items():
        customer = customers[int(customer_id)]
        customer.status, customer.merged_into_id = values["status"], values["merged_into_id"]
        customer.updated_at = now
    restored: dict[str, int] = {}
    for table, rows in merge.moved.items():
        model = MOVED[table]
        for row_id, source in rows:
            back = await session.execute(
                update(model).where(model.id == row_id, model.customer_id == survivor.id)
                .values(customer_id=source).execution_options(synchronize_session=False))
            restored[table] = restored.get(table, 0) + back.rowcount
    if merge.proposal_id is not None:
        await session.execute(
            update(MergeProposal).where(MergeProposal.id == merge.proposal_id)
            .values(state="undone").execution_options(synchronize_session=False))
    audit(session, actor, "customer.unmerge", "customer", survivor.id,
          {"merge_id": merge.id, "survivor": merge.survivor_after},
          {"customers": merge.merged_before, "survivor": merge.survivor_before,
           "restored": restored, "kept": kept}, now)
    log.info("merge %s undone: %s", merge.id, restored)
    return kept


async def carry_with_merges(session: AsyncSession, table: str, row_id: int,
                            addressed_id: int) -> None:
    """A row written to a merged-away customer's number lands on its survivor; each merge
    on the way records it as moved, so undoing the merges takes the row back to the
    customer it was written for."""
    current = addressed_id
    for _ in range(MERGE_HOPS):
        customer = await session.get(Customer, current)
        if customer is None or customer.status != "merged" or customer.merged_into_id is None:
            return
        merges = (await session.scalars(
            select(Merge).where(Merge.survivor_id == customer.merged_into_id,
                                Merge.undone_at.is_(None))
            .order_by(Merge.id.desc()).with_for_update())).all()
        merge = next((m for m in merges if current in m.merged_ids), None)
        if merge is None:
            return
        merge.moved = {**merge.moved, table: [*merge.moved.get(table, []), [row_id, current]]}
        current = customer.merged_into_id


# ---- the duplicate rate ---------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Rate:
    scan: MergeScan  # the scan the "before" figure is from
    before: tuple[int, int]  # (in groups, active) when it ran
    now: tuple[int, int]  # the same today
    merged_since: int  # merges (not undone) of its proposals


async def groups_now(session: AsyncSession, latest: MergeScan) -> list[list[int]]:
    """The duplicate groups as the admins' answers left them: the open proposals (the
    latest scan's groups not decided yet, and those a split proposed since) and the groups
    of the merges undone since that scan began (their records are back, still alike)."""
    open_groups = (await session.scalars(
        select(MergeProposal.member_ids).where(MergeProposal.state == "proposed"))).all()
    undone = (await session.execute(
        select(Merge.survivor_id, Merge.merged_ids)
        .where(Merge.undone_at.is_not(None), Merge.undone_at >= latest.started_at))).all()
    return ([[int(i) for i in ids] for ids in open_groups]
            + [[int(survivor), *(int(i) for i in merged)] for survivor, merged in undone])


async def duplicate_rate(session: AsyncSession) -> Rate | None:
    """The share of active customers in a duplicate group: at the last review before its
    merges, and now. None before the first scan.

    The review is the scan whose proposals were merged last (the latest scan when none
    was); "now" counts the active customers in groups_now, each once.
    """
    latest = await session.scalar(
        select(MergeScan).where(MergeScan.state == "done").order_by(MergeScan.id.desc())
        .limit(1))
    if latest is None:
        return None
    review_id = await session.scalar(
        select(MergeProposal.scan_id).join(Merge, Merge.proposal_id == MergeProposal.id)
        .where(Merge.undone_at.is_(None)).order_by(Merge.id.desc()).limit(1))
    review = latest if review_id is None else await session.get(MergeScan, review_id)
    assert review is not None
    merged = await session.scalar(
        select(func.count()).select_from(Merge)
        .join(MergeProposal, Merge.proposal_id == MergeProposal.id)
        .where(MergeProposal.scan_id == review.id, Merge.undone_at.is_(None))) or 0
    groups = await groups_now(session, latest)
    members = sorted({i for group in groups for i in group})
    active: set[int] = set()
    for chunk in _chunks(members):
        active.update((await session.scalars(
            select(Customer.id).where(Customer.id.in_(chunk), Customer.status != "merged")
        )).all())
    now_grouped = len(counted(groups, active))
    return Rate(review, (review.grouped, review.active), (now_grouped,
                                                           await active_count(session)), merged)
