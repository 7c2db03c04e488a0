"""Creating a lead from any entry point (the API, the chat, an import) in one place.

Validation of raw fields is the entry point's job (bot.api, the import reader); this
module stores the lead, keeps it idempotent on external_id and starts its routing.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import audit
from handlers.assignment import route_leads, set_status
from storage.models import Lead, LeadStatusChange, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

URGENCIES = {"high": "高", "medium": "中", "low": "低"}
# A lead typed in the chat that still lacks a required tag: stored, but not routed, not
# offered, not listed and not in the queue until publish_draft.
DRAFT = "draft"


def canonical_tag(value: str, choices: dict[str, str]) -> str | None:
    """`高`, `High`, ` HIGH ` → `high`: the English key of a {key: 中文} list, any case."""
    text = unicodedata.normalize("NFKC", value or "").strip().casefold()
    for key, label in choices.items():
        if text in (key.casefold(), label.casefold()):
            return key
    return None


@dataclass(slots=True)
class LeadInput:
    company: str
    contact: str
    phone: str | None
    industry: str | None
    urgency: str | None
    source: str | None
    email: str | None = None
    note: str | None = None
    external_id: str | None = None


async def create_lead(
    session: AsyncSession, rt: Runtime, data: LeadInput, now: datetime, *,
    origin: str, creator: Member | None = None, owner: Member | None = None,
    draft: bool = False,
) -> tuple[Lead, bool]:
    """Store a lead and route it; returns (lead, created). A known external_id returns the
    existing lead unchanged (the first body wins)."""
    [result] = await create_leads(session, rt, [data], now, origin=origin, creator=creator,
                                  owner=owner, draft=draft)
    return result


async def create_leads(
    session: AsyncSession, rt: Runtime, batch: list[LeadInput], now: datetime, *,
    origin: str, creator: Member | None = None, owner: Member | None = None,
    draft: bool = False,
) -> list[tuple[Lead, bool]]:
    """Several leads in one transaction, each as create_lead would store it; the team is
    read once for all of them. Results keep the order of `batch`. As drafts, they are
    stored and wait for publish_draft."""
    wanted = [d.external_id for d in batch if d.external_id]
    known: dict[str, Lead] = {}
    if wanted:
        found = await session.scalars(select(Lead).where(Lead.external_id.in_(wanted)))
        known = {lead.external_id: lead for lead in found.all() if lead.external_id}
    results: list[tuple[Lead, bool]] = []
    fresh: list[Lead] = []
    for data in batch:
        if data.external_id and data.external_id in known:
            results.append((known[data.external_id], False))
            continue
        lead = Lead(
            company=data.company, contact=data.contact, phone=data.phone, email=data.email,
            industry=data.industry, urgency=data.urgency, source=data.source, note=data.note,
            external_id=data.external_id, status=DRAFT if draft else "new", origin=origin,
            created_by_id=creator.id if creator else None, created_at=now, updated_at=now,
        )
        session.add(lead)
        fresh.append(lead)
        results.append((lead, True))
        if data.external_id:
            known[data.external_id] = lead  # the same id twice in one batch: first wins
    if not fresh:
        return results
    await session.flush()  # one INSERT for the batch; the ids go on the cards
    for lead in fresh:
        audit(session, creator, "lead.create", "lead", lead.id, None,
              {"origin": origin, "company": lead.company}, now)
        session.add(LeadStatusChange(lead_id=lead.id, from_status=None, to_status=lead.status,
                                     actor_id=creator.id if creator else None, at=now))
    if not draft:
        await _start(session, rt, fresh, now, creator=creator, owner=owner)
    return results


async def publish_draft(
    session: AsyncSession, rt: Runtime, lead: Lead, now: datetime, *, creator: Member
) -> None:
    """A draft whose tags are complete starts its life as create_lead would have started
    it: kept by the rep who typed it, or routed."""
    await _start(session, rt, [lead], now, creator=creator, owner=None)


async def _start(
    session: AsyncSession, rt: Runtime, leads: list[Lead], now: datetime, *,
    creator: Member | None, owner: Member | None,
) -> None:
    keeper = owner or (creator if creator is not None and creator.role == "rep" else None)
    if keeper is None:
        await route_leads(session, rt, leads, now)
        return
    for lead in leads:
        # A lead a rep enters stays with that rep.
        lead.assignee_id, lead.assigned_at, lead.accepted_at = keeper.id, now, now
        set_status(session, lead, "accepted", now, creator, "自己录入")
