"""Customers: the one place a customer is created (an approved conversion), and the
check every entry point makes for an existing lead or customer before it stores one.

The check is handlers.matching's rule: strong (mobile, company and contact) means the
record exists and nothing new is stored; similar (two of company, phone and e-mail) is
shown to whoever creates, who links to it or creates anyway. The approval around a
conversion lives in handlers.conversion.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import audit
from handlers.assignment import set_status
from handlers.matching import (
    KeyIndex,
    MatchKeys,
    Stored,
    Verdict,
    keys_for,
    stored_by_keys,
)
from storage.models import Customer, Lead, Member

T_CONVERTED = "转化审批通过"
T_LINKED = "转化审批通过，关联已有客户"
SIMILAR_SHOWN = 5


@dataclass(slots=True)
class Match:
    kind: str  # lead | customer
    id: int
    score: int
    reasons: list[str]
    strong: bool

    def as_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "score": self.score,
                "reason": self.reasons}


@dataclass(slots=True)
class DoorCheck:
    """What the check found for one new record: its matches, best first (a strong one
    first of all), and, in a batch, the earlier item of the same batch it strongly
    matches."""

    matches: list[Match] = field(default_factory=list)
    earlier: int | None = None
    # Earlier items of the same batch this one resembles: (position, score, reasons).
    batch_similar: list[tuple[int, int, list[str]]] = field(default_factory=list)

    @property
    def strong(self) -> Match | None:
        return self.matches[0] if self.matches and self.matches[0].strong else None


# The door's advisory locks on PostgreSQL: (DOOR, 0) for the door as a whole, (DOOR, h) for
# one phone or e-mail key. Advisory locks are scoped to the database.
DOOR = zlib.crc32(b"salesbot.door") & 0x7FFFFFFF


def _lock_key(value: str) -> int:
    return (zlib.crc32(value.encode("utf-8")) & 0x7FFFFFFF) or 1


async def lock_door(
    session: AsyncSession, probes: Sequence[MatchKeys] = (), *, whole: bool = False
) -> None:
    """Make the check and the write that follows one step against other processes: on
    PostgreSQL, two bot processes checking the same phone at the same moment would each
    find nothing and both create. Held until the transaction ends.

    An entry point takes the door shared and each phone and e-mail key of its probes
    exclusively, in one order (no deadlock); an import's publish takes the whole door, so
    the leads of a concurrent import or post are committed and seen by its late check.
    SQLite needs none of it: every write transaction begins IMMEDIATE, one at a time."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if whole:
        await session.execute(text("SELECT pg_advisory_xact_lock(:door, 0)"), {"door": DOOR})
        return
    await session.execute(text("SELECT pg_advisory_xact_lock_shared(:door, 0)"),
                          {"door": DOOR})
    keys = sorted({_lock_key(v) for p in probes for v in (p.phone, p.email) if v})
    if keys:
        await session.execute(text(
            "SELECT pg_advisory_xact_lock(:door, k) FROM unnest(CAST(:keys AS integer[])) AS k"
        ), {"door": DOOR, "keys": keys})


def lead_keys(lead: Lead) -> MatchKeys:
    return keys_for(lead.company, lead.contact, lead.phone or lead.landline, lead.email)


async def check_door(
    session: AsyncSession, probes: Sequence[MatchKeys], *,
    exclude: Sequence[tuple[str, int]] = (), customers_only: bool = False,
) -> list[DoorCheck]:
    """The matches of each probe among the stored leads and customers, in two indexed
    queries a table for the whole batch; a probe that strongly matches an earlier probe
    of the batch says which. A converted lead is reported as its customer; `exclude`
    holds records not to report (the draft being checked itself)."""
    phones = {p.phone for p in probes if p.phone}
    emails = {p.email for p in probes if p.email}
    stored = await stored_by_keys(session, phones, emails) if phones or emails else []
    index = KeyIndex()
    for record in stored:
        if record.status != "draft":  # a chat draft is not a lead until its tags are in
            index.add(record, record.keys)
    skip = set(exclude)
    batch = KeyIndex()
    out = []
    for position, probe in enumerate(probes):
        best: dict[tuple[str, int], Verdict] = {}
        for record, verdict in index.matches(probe):
            target = _target(record)
            if target in skip or (customers_only and target[0] != "customer"):
                continue
            known = best.get(target)
            if known is None or (verdict.strong, verdict.score) > (known.strong, known.score):
                best[target] = verdict
        ranked = sorted(best.items(), key=lambda item: (
            not item[1].strong, item[0][0] != "customer", -item[1].score, item[0][1]))
        check = DoorCheck([Match(kind, object_id, v.score, v.reasons, v.strong)
                           for (kind, object_id), v in ranked[:SIMILAR_SHOWN]])
        if check.strong is None:
            earlier = batch.matches(probe)
            check.earlier = min((i for i, v in earlier if v.strong), default=None)
            check.batch_similar = sorted((i, v.score, v.reasons) for i, v in earlier)
        batch.add(position, probe)
        out.append(check)
    return out


def _target(record: Stored) -> tuple[str, int]:
    """What a stored record stands for now: a converted lead its customer, a merged-away
    customer its survivor."""
    if record.customer_id is not None:
        return ("customer", record.customer_id)
    return (record.kind, record.id)


async def load_match(session: AsyncSession, match: Match) -> Lead | Customer | None:
    model = Customer if match.kind == "customer" else Lead
    return await session.get(model, match.id)


async def matching_customer(session: AsyncSession, lead: Lead) -> Customer | None:
    """The customer this lead already is: a strong match, else the best similar one."""
    [check] = await check_door(session, [lead_keys(lead)], exclude=[("lead", lead.id)],
                               customers_only=True)
    if not check.matches:
        return None
    customer = await session.get(Customer, check.matches[0].id)
    return customer if customer is not None and customer.status != "merged" else None


async def convert_lead(
    session: AsyncSession, lead: Lead, now: datetime, *, owner: Member, actor: Member,
    link_to: Customer | None = None, create: bool = False,
) -> tuple[Customer, bool]:
    """Make the lead a customer owned by `owner`, or link it to the customer it already
    is (`link_to`, else the best match unless `create`: the approver saw the similar
    customer and chose a new one); returns (customer, created). The lead becomes
    `converted`."""
    customer = link_to
    if customer is None and not create:
        customer = await matching_customer(session, lead)
    created = customer is None
    if customer is None:
        customer = Customer(
            company=lead.company.strip(), contact=lead.contact.strip(), phone=lead.phone,
            email=lead.email, industry=lead.industry, owner_id=owner.id, lead_id=lead.id,
            created_at=now, updated_at=now,
        )
        session.add(customer)
        await session.flush()
        audit(session, actor, "customer.create", "customer", customer.id, None,
              {"lead_id": lead.id, "owner": owner.name, "company": customer.company}, now)
    before = {"status": lead.status, "customer_id": lead.customer_id}
    lead.customer_id = customer.id
    set_status(session, lead, "converted", now, actor, T_CONVERTED if created else T_LINKED)
    audit(session, actor, "lead.convert", "lead", lead.id, before,
          {"status": "converted", "customer_id": customer.id, "linked": not created}, now)
    return customer, created
