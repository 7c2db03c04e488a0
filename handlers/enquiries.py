"""A lead posted again for a lead or customer we have: kept as an enquiry, its owner told.

The door (handlers.customers) decides that a post is a strong match; this module keeps
what the post said and tells whoever should hear that the customer came back. It does
not create leads or reopen them: a lost lead's manager decides with /重开.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.outbox import enqueue
from handlers.assignment import active_admins, manager_of
from handlers.intake import LeadInput
from handlers.lifecycle import last_owner
from handlers.phones import mask_phone
from storage.models import Customer, Enquiry, Lead, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

T_ENQUIRY = ("客户再次来询：{company} · {contact} · {phone}（来源：{source}）。"
             "已记在{kind} #{id} 下，没有新建线索。{note}")
T_ENQUIRY_LOST = ("已流失的线索 #{id}（{company}）有客户再次来询：{contact} · {phone}"
                  "（来源：{source}）。{note}如需重新跟进，发送 /重开 {id}。")
T_NOTE = "备注：{note}。"
T_KIND = {"lead": "线索", "customer": "客户"}
WORKING = ("assigned", "accepted", "contacted")


async def known_enquiries(session: AsyncSession, external_ids: list[str]) -> dict[str, Enquiry]:
    if not external_ids:
        return {}
    found = await session.scalars(select(Enquiry).where(Enquiry.external_id.in_(external_ids)))
    return {e.external_id: e for e in found.all() if e.external_id}


async def record_enquiry(
    session: AsyncSession, rt: Runtime, data: LeadInput, kind: str, object_id: int,
    now: datetime, *, origin: str, notify: bool = True, told: Member | None = None,
) -> Enquiry:
    """Keep the post as an enquiry on the record; tell its owner (for a lost lead, the
    manager, who may reopen it), unless that is `told`, who was answered already. A lead
    still in the queue needs nobody told."""
    values = {"company": data.company, "contact": data.contact, "phone": data.phone,
              "email": data.email, "industry": data.industry, "urgency": data.urgency,
              "source": data.source, "note": data.note}
    enquiry = Enquiry(external_id=data.external_id, kind=kind, object_id=object_id,
                      origin=origin, values=values, at=now)
    session.add(enquiry)
    if notify:
        for member, text in await _messages(session, rt, data, kind, object_id):
            if told is None or member.id != told.id:
                await enqueue(session, rt, member, text)
    return enquiry


async def _messages(
    session: AsyncSession, rt: Runtime, data: LeadInput, kind: str, object_id: int,
) -> list[tuple[Member, str]]:
    source = rt.settings.leads.sources.get(data.source or "", data.source or "-")
    note = T_NOTE.format(note=data.note[:200]) if data.note else ""
    said = {"company": data.company, "contact": data.contact, "phone": mask_phone(data.phone),
            "source": source, "note": note, "id": object_id, "kind": T_KIND[kind]}
    record = await session.get(Lead if kind == "lead" else Customer, object_id)
    if record is None:
        return []
    if isinstance(record, Customer):
        text = T_ENQUIRY.format(**said)
        return [(m, text) for m in await _owner_or_manager(session, record.owner_id)]
    if record.status in WORKING and record.assignee_id is not None:
        text = T_ENQUIRY.format(**said)
        return [(m, text) for m in await _owner_or_manager(session, record.assignee_id)]
    if record.status == "lost":
        text = T_ENQUIRY_LOST.format(**said | {"company": record.company})
        owner = await last_owner(session, record)
        return [(m, text) for m in await (manager_of(session, owner) if owner is not None
                                          else active_admins(session))]
    return []


async def _owner_or_manager(session: AsyncSession, member_id: int | None) -> list[Member]:
    """The owner; one who has left is stood in for by the manager (or the admins)."""
    member = await session.get(Member, member_id) if member_id else None
    if member is None:
        return []
    return [member] if member.status != "left" else await manager_of(session, member)

