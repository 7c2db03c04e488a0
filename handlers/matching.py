"""Duplicate detection: is this lead or customer one we already have, and which stored
customers are one another (the monthly merge review's groups).

Owns the decision (strong / similar), the stored match keys and their blocking; it
does not merge, link or tell anyone (handlers.customers and the merge review do).

The rule (PRODUCT.md §2, field report C14):
- strong: the same mobile, the same company (full key: region kept) and the same contact;
- similar: at least two of company (core key, fuzzy), phone and e-mail agree. A company
  alone never is: the same brand in another city and namesakes are not duplicates.

The company comparison works on the normalised cores (handlers.normalize), never on raw
names: raw ratios rank 深圳样本科技 above 示例科技（深圳）. Equal cores score 100; a short
core inside a longer one (示例科技 in 示例科技发展) 90, when it is at least 40 % of it; else
rapidfuzz's `fuzz.ratio` (the normalised Indel similarity, character by character, which
suits CJK names that have no word boundaries; token scorers treat a Chinese name as one
token). A threshold of 70 accepts one wrong character in a four-character core (75: 示例科技
/ 示利科技) and refuses two (50: 示例科技 / 样本科技). Two branches of one company (示例科技/
深圳分公司, 示例科技/广州分公司) never agree on the company.

Blocking: candidates come only from the indexed key columns: phone key, e-mail key,
company core, and the company core's rare bigrams (match_grams). Under the rule every
similar pair shares a phone or an e-mail key, so the company blocks never add a similar
pair by themselves; find_similar asks them anyway, so that its candidates do not hang on
that argument, and scan_groups, which must be fast over every customer, uses the phone
and e-mail blocks only.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from rapidfuzz import fuzz
from sqlalchemy import (
    Table,
    bindparam,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from handlers.normalize import (
    BRANCH_MARK,
    company_grams,
    company_keys,
    contact_key,
    email_key,
    generic_place,
    is_mobile,
    phone_key,
)
from storage.models import Customer, Lead, MatchGram

Kind = Literal["lead", "customer"]
Progress = Callable[[int, int], Awaitable[None]]

COMPANY_THRESHOLD = 70
CONTAINED_SCORE = 90
CONTAINED_SHARE = 0.4
# At the door: at most this many candidates from one phone, e-mail or core key. A key
# shared by more (a switchboard number, a generic sales@ address) is asked twice: for
# records that also share the core or the e-mail, and for the newest KEY_CAP.
KEY_CAP = 50
# A gram found on more records than this (科技, 贸易, 有限) is too common to block on;
# of the rest, the RARE_GRAMS rarest are used and their GRAM_CANDIDATES best-sharing
# records compared.
GRAM_CAP = 200
RARE_GRAMS = 3
GRAM_CANDIDATES = 30
# In the monthly scan, a phone or e-mail block larger than this is a switchboard or a
# shared address: only its records that also share the core or the other key are paired.
BLOCK_CAP = 30
# A phone on this many different company cores is a switchboard (see decide).
SWITCHBOARD_CORES = 3
BATCH = 2000
# A merged-away customer's survivor is followed this many merges at most: a chain of
# merges is as long as the merges done one after another, and an undo breaks cycles.
MERGE_HOPS = 32
_WEIGHTS = {"phone": 35, "email": 35, "company": 30}
_SOURCE = {"lead": ("company", "contact", "phone", "landline", "email"),
           "customer": ("company", "contact", "phone", "email")}
_KEY_COLUMNS = ("phone_key", "email_key", "company_full", "company_core", "contact_key")


@dataclass(frozen=True, slots=True)
class MatchKeys:
    """What a lead or customer is compared by (handlers.normalize makes each key)."""

    company_full: str | None = None
    company_core: str | None = None
    phone: str | None = None
    email: str | None = None
    contact: str | None = None

    def columns(self) -> dict[str, str | None]:
        return {"phone_key": self.phone, "email_key": self.email,
                "company_full": self.company_full, "company_core": self.company_core,
                "contact_key": self.contact}


@dataclass(frozen=True, slots=True)
class Verdict:
    similar: bool
    strong: bool
    score: int
    reasons: list[str]


@dataclass(slots=True)
class Similar:
    kind: Kind
    id: int
    score: int
    reasons: list[str]
    strong: bool


@dataclass(slots=True)
class Group:
    """Customers the monthly scan takes for one: ids ascending; each decided pair as
    (a, b, reasons, score) with a < b."""

    customer_ids: tuple[int, ...]
    pairs: list[tuple[int, int, list[str], int]] = field(default_factory=list)


def keys_for(company: str | None, contact: str | None, phone: str | None,
             email: str | None) -> MatchKeys:
    names = company_keys(company)
    return MatchKeys(company_full=names.full or None, company_core=names.core or None,
                     phone=phone_key(phone), email=email_key(email),
                     contact=contact_key(contact))


def _stored_keys(kind: str, values: dict[str, Any]) -> MatchKeys:
    # Limitation: a lead has one phone key, its phone (else its landline); a lead whose
    # landline is another record's only number does not agree with it on the phone.
    names = company_keys(values.get("company"))
    phone = phone_key(values.get("phone")) or phone_key(values.get("landline"))
    return MatchKeys(company_full=names.full or None, company_core=names.core or None,
                     phone=phone, email=email_key(values.get("email")),
                     contact=contact_key(values.get("contact")))


def company_score(a: str | None, b: str | None) -> int:
    """How alike two company cores are, 0–100 (see the module's docstring)."""
    if not a or not b:
        return 0
    a_own, _, a_branch = a.partition(BRANCH_MARK)
    b_own, _, b_branch = b.partition(BRANCH_MARK)
    if a_branch and b_branch and a_branch != b_branch:
        return min(int(fuzz.ratio(a, b)), COMPANY_THRESHOLD - 1)
    if a_own == b_own:
        return 100
    short, long = sorted((a_own, b_own), key=len)
    if len(short) >= 2 and short in long and len(short) >= CONTAINED_SHARE * len(long):
        return CONTAINED_SCORE
    score = int(fuzz.ratio(a_own, b_own))
    if score >= COMPANY_THRESHOLD and generic_place(a_own) and generic_place(b_own):
        # Names of a place and generic words differ in what they say, not by a typo:
        # 北京大学 / 南京大学 / 北京理工大学 are three institutions.
        return COMPANY_THRESHOLD - 1
    return score


def decide(a: MatchKeys, b: MatchKeys, *, switchboard: bool = False) -> Verdict:
    """Strong, similar or neither; the score (strong 100, else at most 99) and reasons.

    `switchboard`: the phone they share is on three or more different companies. Then a
    fuzzy company name (below CONTAINED_SCORE: 宇泽丰医疗器械 / 丰成医疗器械) and that
    phone are not two fields: an equal or contained name, or the e-mail, is needed."""
    phone = a.phone is not None and a.phone == b.phone
    email = a.email is not None and a.email == b.email
    company = company_score(a.company_core, b.company_core)
    company_agrees = company >= COMPANY_THRESHOLD
    strong = (phone and is_mobile(a.phone) and a.company_full is not None
              and a.company_full == b.company_full and a.contact is not None
              and a.contact == b.contact)
    reasons = [name for name, agrees in (("phone", phone), ("email", email),
                                         ("company", company_agrees)) if agrees]
    if strong:
        return Verdict(True, True, 100, ["strong", *reasons])
    score = _WEIGHTS["phone"] * phone + _WEIGHTS["email"] * email
    if company_agrees:
        score += _WEIGHTS["company"] * company / 100
    similar = len(reasons) >= 2
    if switchboard and reasons == ["phone", "company"] and company < CONTAINED_SCORE:
        similar = False
    return Verdict(similar, False, min(99, round(score)), reasons)


# Keeping the stored keys current ------------------------------------------------------

_PENDING = "match_keys_pending"
_GONE = "match_keys_gone"


def _kind_of(obj: object) -> Kind | None:
    if isinstance(obj, Lead):
        return "lead"
    if isinstance(obj, Customer):
        return "customer"
    return None


def _fill_keys(session: Session, _context: Any, _instances: Any) -> None:
    """before_flush: new or changed leads and customers get their keys; their grams are
    written after the flush, when every id is known."""
    # Anew at every flush: what a failed flush left is still new or dirty, and seen again.
    pending: dict[int, tuple[Kind, Lead | Customer]] = {}
    session.info[_PENDING] = pending
    for obj in itertools.chain(session.new, session.dirty):
        kind = _kind_of(obj)
        if kind is None:
            continue
        state = inspect(obj)
        if not state.pending and not any(state.attrs[name].history.has_changes()
                                         for name in _SOURCE[kind]):
            continue
        keys = _stored_keys(kind, {name: getattr(obj, name) for name in _SOURCE[kind]})
        core_before = obj.company_core
        for column, value in keys.columns().items():
            setattr(obj, column, value)
        if state.pending or core_before != keys.company_core:
            pending[id(obj)] = (kind, obj)
    gone: list[tuple[Kind, int]] = []
    session.info[_GONE] = gone
    for obj in session.deleted:
        kind = _kind_of(obj)
        if kind is not None:
            gone.append((kind, obj.id))


def _write_grams(session: Session, _context: Any) -> None:
    """after_flush: the grams of the records whose core changed, and none of those gone."""
    pending = {key: (kind, obj) for key, (kind, obj) in session.info.pop(_PENDING, {}).items()
               if obj.id is not None}
    gone = session.info.pop(_GONE, [])
    stale = gone + [(kind, obj.id) for kind, obj in pending.values()]
    if not stale:
        return
    connection = session.connection()
    for kind in ("lead", "customer"):
        ids = [object_id for k, object_id in stale if k == kind]
        if ids:
            connection.execute(delete(MatchGram).where(MatchGram.kind == kind,
                                                       MatchGram.object_id.in_(ids)))
    rows = [{"kind": kind, "object_id": obj.id, "gram": gram}
            for kind, obj in pending.values() for gram in company_grams(obj.company_core or "")]
    if rows:
        connection.execute(MatchGram.__table__.insert(), rows)


def keep_keys_current() -> None:
    """Let every ORM session fill the match keys of the leads and customers it writes (the
    runtime calls this once; calling it again changes nothing). Rows written with Core
    SQL (INSERT … SELECT, bulk UPDATE) are indexed with index_rows instead."""
    for name, listener in (("before_flush", _fill_keys), ("after_flush", _write_grams)):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)


def _table(kind: str) -> Table:
    if kind == "lead":
        return Lead.__table__  # type: ignore[return-value]
    if kind == "customer":
        return Customer.__table__  # type: ignore[return-value]
    raise ValueError(f"unknown kind {kind!r}")


def index_values(kind: str, rows: Iterable[Sequence[Any]]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For rows (id, *source columns of `kind`): the key columns' UPDATE parameters and
    the gram rows. Pure; shared by index_rows and the migration's back-fill."""
    updates, grams = [], []
    for row in rows:
        object_id, *values = row
        keys = _stored_keys(kind, dict(zip(_SOURCE[kind], values, strict=True)))
        updates.append({"k_id": object_id} | {f"k_{c}": v for c, v in keys.columns().items()})
        grams += [{"kind": kind, "object_id": object_id, "gram": gram}
                  for gram in company_grams(keys.company_core or "")]
    return updates, grams


def update_keys_statement(table: Table) -> Any:
    return (update(table).where(table.c.id == bindparam("k_id"))
            .values({c: bindparam(f"k_{c}") for c in _KEY_COLUMNS}))


async def index_rows(session: AsyncSession, kind: Kind, ids: Iterable[int]) -> int:
    """(Re)compute the keys and grams of these leads or customers, BATCH rows a statement:
    for rows written with Core SQL, which the ORM hook does not see. Returns the count."""
    table = _table(kind)
    source = [table.c.id, *(table.c[name] for name in _SOURCE[kind])]
    statement = update_keys_statement(table)
    ordered = sorted(set(ids))
    done = 0
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start:start + BATCH]
        rows = (await session.execute(select(*source).where(table.c.id.in_(chunk)))).all()
        updates, grams = index_values(kind, rows)
        if updates:
            await session.execute(statement, updates)
        await session.execute(delete(MatchGram).where(MatchGram.kind == kind,
                                                      MatchGram.object_id.in_(chunk)))
        if grams:
            await session.execute(MatchGram.__table__.insert(), grams)
        done += len(updates)
    return done


# At the door ----------------------------------------------------------------------------

def _row_keys(row: Any) -> MatchKeys:
    return MatchKeys(company_full=row.company_full, company_core=row.company_core,
                     phone=row.phone_key, email=row.email_key, contact=row.contact_key)


# The door's statements are written once as SQL text: building them as expressions cost
# more than running them (column proxies of each subquery), on every call.
_DOOR_COLUMNS = "id, phone_key, email_key, company_full, company_core, contact_key"


def _door_statement() -> Any:
    """Every candidate of the probe, leads and customers, in one statement: by phone (those
    that also share the core or the e-mail, and the newest), e-mail, core, and grams. A
    NULL key matches nothing. Each part is limited on its own, so it is a subquery."""
    limited = [("phone_key = :phone AND (company_core = :core OR email_key = :email)", ""),
               ("phone_key = :phone", "ORDER BY id DESC"),
               ("email_key = :email", "ORDER BY id DESC"),
               ("company_core = :core", "ORDER BY id DESC")]
    parts = []
    for table, extra, ids in (
        ("customers", "'customer' AS kind, CAST(NULL AS INTEGER) AS customer_id, status",
         "customer_ids"),
        ("leads", "'lead' AS kind, customer_id, CAST(NULL AS VARCHAR(12)) AS status",
         "lead_ids"),
    ):
        select_from = f"SELECT {_DOOR_COLUMNS}, {extra} FROM {table}"
        parts += [f"SELECT * FROM ({select_from} WHERE {where} {order} LIMIT :cap) AS "
                  f"{table}_{n}" for n, (where, order) in enumerate(limited)]
        parts.append(f"{select_from} WHERE id IN :{ids}")
    return text(" UNION ALL ".join(parts)).bindparams(
        bindparam("customer_ids", expanding=True), bindparam("lead_ids", expanding=True))


_DOOR = _door_statement()
_GRAM_SHARERS = text(
    "SELECT kind, object_id, count(*) AS shared FROM match_grams WHERE gram IN :grams "
    "GROUP BY kind, object_id ORDER BY shared DESC, object_id DESC LIMIT :n"
).bindparams(bindparam("grams", expanding=True))


@lru_cache(maxsize=64)
def _gram_counts(size: int) -> Any:
    """One row: how many records hold each of `size` grams, counted up to GRAM_CAP + 1."""
    counts = ", ".join(f"(SELECT count(*) FROM (SELECT 1 FROM match_grams WHERE gram = :g{i} "
                       f"LIMIT :cap) AS g{i})" for i in range(size))
    return text(f"SELECT {counts}")


async def _gram_candidates(session: AsyncSession, core: str | None
                           ) -> dict[str, list[int]]:
    """Records sharing the probe's rarest grams, those sharing most first."""
    grams = company_grams(core or "")
    if not grams:
        return {}
    params: dict[str, Any] = {f"g{i}": gram for i, gram in enumerate(grams)}
    found = (await session.execute(_gram_counts(len(grams)),
                                   params | {"cap": GRAM_CAP + 1})).one()
    rare = sorted((n, gram) for gram, n in zip(grams, found, strict=True)
                  if 0 < n <= GRAM_CAP)[:RARE_GRAMS]
    if not rare:
        return {}
    rows = (await session.execute(_GRAM_SHARERS, {"grams": [gram for _, gram in rare],
                                                  "n": GRAM_CANDIDATES})).all()
    out: dict[str, list[int]] = defaultdict(list)
    for kind, object_id, _ in rows:
        out[kind].append(object_id)
    return out


async def survivor_ids(session: AsyncSession, ids: set[int]) -> dict[int, int | None]:
    """customer id → the active customer it is now (itself, or where it was merged into,
    followed to the end), None when there is none."""
    out: dict[int, int | None] = {}
    c = Customer.__table__.c
    todo = {i: i for i in ids}
    for _ in range(MERGE_HOPS):
        if not todo:
            break
        rows = (await session.execute(select(c.id, c.status, c.merged_into_id)
                                      .where(c.id.in_(set(todo.values()))))).all()
        state = {row.id: row for row in rows}
        following = {}
        for start, current in todo.items():
            row = state.get(current)
            if row is None:
                out[start] = None
            elif row.status != "merged":
                out[start] = current
            elif row.merged_into_id is not None:
                following[start] = row.merged_into_id
            else:
                out[start] = None
        todo = following
    out.update({start: None for start in todo})
    return out


async def survivor_of(session: AsyncSession, customer_id: int) -> int | None:
    """The active customer this one is now: itself, the customer it was merged into (to
    the end of a chain of merges), or None when it does not exist."""
    return (await survivor_ids(session, {customer_id})).get(customer_id)


async def find_similar(
    session: AsyncSession, probe: MatchKeys, *, limit: int = 5,
    exclude: Collection[tuple[str, int]] | None = None,
) -> list[Similar]:
    """Stored leads and customers that are strong or similar matches of `probe`, best
    first (strong, then score). A lead already converted is reported as its customer; a
    merged-away customer as the one it was merged into. `exclude` holds (kind, id) pairs
    not to report (the record being checked itself)."""
    excluded = set(exclude or ())
    grams = await _gram_candidates(session, probe.company_core)
    candidates: dict[tuple[Kind, int], Any] = {}
    if probe.phone or probe.email or probe.company_core:
        rows = (await session.execute(_DOOR, {
            "phone": probe.phone, "email": probe.email, "core": probe.company_core,
            "cap": KEY_CAP, "customer_ids": grams.get("customer", []),
            "lead_ids": grams.get("lead", [])})).all()
        for row in rows:
            candidates.setdefault((row.kind, row.id), row)
    cores = {row.company_core for row in candidates.values()
             if probe.phone and row.phone_key == probe.phone} | {probe.company_core}
    switchboard = len(cores - {None}) >= SWITCHBOARD_CORES
    verdicts: dict[tuple[Kind, int], Verdict] = {}
    converted: dict[int, list[Verdict]] = defaultdict(list)
    for (kind, object_id), row in candidates.items():
        if (kind, object_id) in excluded:
            continue
        verdict = decide(probe, _row_keys(row), switchboard=switchboard)
        if not verdict.similar:
            continue
        if kind == "lead" and row.customer_id is not None:
            converted[row.customer_id].append(verdict)
        else:
            verdicts[(kind, object_id)] = verdict
    customers = {object_id for kind, object_id in verdicts if kind == "customer"}
    survivors = await survivor_ids(session, customers | set(converted))
    found: dict[tuple[Kind, int], Verdict] = {}

    def keep(target: int | None, verdict: Verdict) -> None:
        if target is None or ("customer", target) in excluded:
            return
        best = found.get(("customer", target))
        if best is None or (verdict.strong, verdict.score) > (best.strong, best.score):
            found[("customer", target)] = verdict

    for (kind, object_id), verdict in verdicts.items():
        if kind == "lead":
            found[(kind, object_id)] = verdict
        else:
            keep(survivors.get(object_id), verdict)
    for customer_id, lead_verdicts in converted.items():
        for verdict in lead_verdicts:
            keep(survivors.get(customer_id), verdict)
    ranked = sorted(found.items(), key=lambda item: (
        not item[1].strong, -item[1].score, item[0][0] != "customer", item[0][1]))
    return [Similar(kind, object_id, v.score, v.reasons, v.strong)
            for (kind, object_id), v in ranked[:limit]]


# In bulk: the import's check ------------------------------------------------------------

@dataclass(slots=True)
class Stored:
    """A stored lead or customer as the bulk check compares it."""

    kind: Kind
    id: int
    keys: MatchKeys
    # A converted lead's customer; a merged-away customer's survivor.
    customer_id: int | None = None
    status: str | None = None


async def stored_by_keys(session: AsyncSession, phones: Collection[str],
                         emails: Collection[str]) -> list[Stored]:
    """Customers and leads holding one of these phone or e-mail keys, by the indexed key
    columns (every similar pair shares one of the two: see the docstring). A customer
    merged away is kept, pointing at the customer it is now (its other number may be
    the one a new record shares); one whose survivor is gone is left out."""
    found: dict[tuple[Kind, int], Stored] = {}
    for kind in ("customer", "lead"):
        table = _table(kind)
        columns = [table.c.id, *(table.c[name] for name in _KEY_COLUMNS)]
        extra = [table.c.status] + ([table.c.customer_id] if kind == "lead" else [])
        for column, values in (("phone_key", phones), ("email_key", emails)):
            values = sorted(set(values))
            for start in range(0, len(values), BATCH):
                query = select(*columns, *extra).where(
                    table.c[column].in_(values[start:start + BATCH]))
                for row in (await session.execute(query)).all():
                    found.setdefault((kind, row.id), Stored(
                        kind, row.id, _row_keys(row),
                        row.customer_id if kind == "lead" else None, row.status))
    merged = {r.id for r in found.values() if r.kind == "customer" and r.status == "merged"}
    if merged:
        survivors = await survivor_ids(session, merged)
        for customer_id in merged:
            if survivors.get(customer_id) is None:
                del found[("customer", customer_id)]
            else:
                found[("customer", customer_id)].customer_id = survivors[customer_id]
    return list(found.values())


class KeyIndex:
    """Records by phone and e-mail key, in memory, for deciding many probes at once (the
    import: a chunk of rows against the stored records, and each row against the rows
    before it in the file)."""

    def __init__(self) -> None:
        self._by_phone: dict[str, list[tuple[Any, MatchKeys]]] = defaultdict(list)
        self._by_email: dict[str, list[tuple[Any, MatchKeys]]] = defaultdict(list)

    def add(self, item: Any, keys: MatchKeys) -> None:
        if keys.phone:
            self._by_phone[keys.phone].append((item, keys))
        if keys.email:
            self._by_email[keys.email].append((item, keys))

    def matches(self, probe: MatchKeys) -> list[tuple[Any, Verdict]]:
        """Every record that is a strong or similar match of `probe`, with its verdict,
        in the order they were added."""
        sharing = self._by_phone.get(probe.phone, []) if probe.phone else []
        cores = {keys.company_core for _, keys in sharing} | {probe.company_core}
        switchboard = len(cores - {None}) >= SWITCHBOARD_CORES
        seen: set[int] = set()
        out = []
        for item, keys in itertools.chain(
                sharing, self._by_email.get(probe.email, []) if probe.email else []):
            if id(item) in seen:
                continue
            seen.add(id(item))
            verdict = decide(probe, keys, switchboard=switchboard)
            if verdict.similar:
                out.append((item, verdict))
        return out


# The monthly review -----------------------------------------------------------------------

def _pairs_in(block: list[int], keys: list[MatchKeys], others: tuple[str, ...],
              pairs: set[tuple[int, int]]) -> None:
    """Every pair of a block; of a block over BLOCK_CAP only those that also share one of
    the `others` keys (a shared switchboard number does not glue companies by itself)."""
    if len(block) <= BLOCK_CAP:
        pairs.update(itertools.combinations(block, 2))
        return
    for other in others:
        sub: dict[str, list[int]] = defaultdict(list)
        for index in block:
            value = getattr(keys[index], other)
            if value:
                sub[value].append(index)
        for members in sub.values():
            if len(members) <= BLOCK_CAP:
                pairs.update(itertools.combinations(members, 2))
            else:
                # One company under one number hundreds of times: a star keeps it whole
                # without a quadratic number of pairs.
                pairs.update((members[0], index) for index in members[1:])


class _Union:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


async def scan_groups(session: AsyncSession, *, progress: Progress | None = None
                      ) -> list[Group]:
    """Every group of active customers that are one another: pairs from the phone and
    e-mail blocks (see the module's docstring) decided by `decide`, joined into groups of
    any size. Groups in the order of their smallest id."""
    c = Customer.__table__.c
    rows = (await session.execute(
        select(c.id, *(c[name] for name in _KEY_COLUMNS)).where(c.status != "merged")
        .order_by(c.id))).all()
    ids = [row.id for row in rows]
    keys = [_row_keys(row) for row in rows]
    by_phone: dict[str, list[int]] = defaultdict(list)
    by_email: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        if key.phone:
            by_phone[key.phone].append(index)
        if key.email:
            by_email[key.email].append(index)
    candidates: set[tuple[int, int]] = set()
    for block in by_phone.values():
        if len(block) > 1:
            _pairs_in(block, keys, ("company_core", "email"), candidates)
    for block in by_email.values():
        if len(block) > 1:
            _pairs_in(block, keys, ("company_core", "phone"), candidates)
    switchboards = {phone for phone, block in by_phone.items()
                    if len({keys[i].company_core for i in block} - {None}) >= SWITCHBOARD_CORES}
    total = len(candidates)
    decided: list[tuple[int, int, list[str], int]] = []
    for done, (a, b) in enumerate(sorted(candidates), start=1):
        verdict = decide(keys[a], keys[b], switchboard=keys[a].phone in switchboards)
        if verdict.similar:
            decided.append((a, b, verdict.reasons, verdict.score))
        if progress is not None and done % 20_000 == 0:
            await progress(done, total)
    if progress is not None:
        await progress(total, total)
    return _joined(ids, decided)


def _joined(ids: Sequence[int], decided: list[tuple[int, int, list[str], int]]) -> list[Group]:
    """The similar pairs (a, b: indices into `ids`, ascending) joined into groups of any
    size, in the order of their smallest id."""
    union = _Union(len(ids))
    for a, b, *_ in decided:
        union.join(a, b)
    groups: dict[int, Group] = {}
    for a, b, reasons, score in decided:
        root = union.find(a)
        group = groups.setdefault(root, Group(()))
        group.pairs.append((ids[a], ids[b], reasons, score))
    for group in groups.values():
        members = {i for pair in group.pairs for i in pair[:2]}
        group.customer_ids = tuple(sorted(members))
        group.pairs.sort()
    return [groups[root] for root in sorted(groups)]


async def groups_among(session: AsyncSession, customer_ids: Collection[int]) -> list[Group]:
    """The groups among these customers alone (a proposal's few records): every pair of
    the active ones decided by `decide`, a shared phone judged a switchboard over every
    active customer on it, as scan_groups judges it."""
    c = Customer.__table__.c
    rows = (await session.execute(
        select(c.id, *(c[name] for name in _KEY_COLUMNS))
        .where(c.id.in_(sorted(set(customer_ids))), c.status != "merged").order_by(c.id))).all()
    ids = [row.id for row in rows]
    keys = [_row_keys(row) for row in rows]
    phones = sorted({key.phone for key in keys if key.phone})
    switchboards: set[str] = set()
    if phones:
        cores = await session.execute(
            select(c.phone_key, func.count(func.distinct(c.company_core)))
            .where(c.phone_key.in_(phones), c.status != "merged").group_by(c.phone_key))
        switchboards = {phone for phone, n in cores.all() if n >= SWITCHBOARD_CORES}
    decided = []
    for a, b in itertools.combinations(range(len(ids)), 2):
        verdict = decide(keys[a], keys[b], switchboard=keys[a].phone in switchboards)
        if verdict.similar:
            decided.append((a, b, verdict.reasons, verdict.score))
    return _joined(ids, decided)
