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
from handlers.assignment import route_lead, set_status
from storage.models import Lead, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

URGENCIES = {"high": "高", "medium": "中", "low": "低"}


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
) -> tuple[Lead, bool]:
    """Store a lead and route it; returns (lead, created). A known external_id returns the
    existing lead unchanged (the first body wins)."""
    if data.external_id:
        existing = await session.scalar(select(Lead).where(Lead.external_id == data.external_id))
        if existing is not None:
            return existing, False
    lead = Lead(
        company=data.company, contact=data.contact, phone=data.phone, email=data.email,
        industry=data.industry, urgency=data.urgency, source=data.source, note=data.note,
        external_id=data.external_id, status="new", origin=origin,
        created_by_id=creator.id if creator else None, created_at=now, updated_at=now,
    )
    session.add(lead)
    await session.flush()
    audit(session, creator, "lead.create", "lead", lead.id, None,
          {"origin": origin, "company": data.company}, now)
    keeper = owner or (creator if creator is not None and creator.role == "rep" else None)
    if keeper is not None:
        # A lead a rep enters stays with that rep.
        lead.assignee_id, lead.assigned_at, lead.accepted_at = keeper.id, now, now
        set_status(session, lead, "accepted", now, creator, "自己录入")
    else:
        from storage.models import LeadStatusChange

        session.add(LeadStatusChange(lead_id=lead.id, from_status=None, to_status="new",
                                     actor_id=creator.id if creator else None, at=now))
        await route_lead(session, rt, lead, now)
    return lead, True
