"""Customers: the one place a customer is created (an approved conversion), and the
checks for an existing lead or customer before anything new is stored.

Matching is exact for now (the normalised phone; company and contact); fuzzy matching
belongs to the duplicates work and extends `find_duplicate` and `matching_customer`.
The approval around a conversion lives in handlers.conversion.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import audit
from handlers.assignment import set_status
from storage.models import Customer, Lead, Member

T_CONVERTED = "转化审批通过"
T_LINKED = "转化审批通过，关联已有客户"


MERGE_CHAIN = 10  # merged into a record merged in turn: followed this far at most


async def surviving(session: AsyncSession, customer: Customer | None) -> Customer | None:
    """The record a merged-away customer lives on now (the customer itself when it was
    not merged away): a match on its old values is a match on the survivor."""
    for _ in range(MERGE_CHAIN):
        if customer is None or customer.merged_into_id is None:
            return customer
        customer = await session.get(Customer, customer.merged_into_id)
    return customer


async def find_duplicate(session: AsyncSession, phone: str) -> Customer | Lead | None:
    """An existing customer, else lead, with this normalised phone: the check every entry
    point makes before it stores a lead."""
    customer = await surviving(session, await session.scalar(
        select(Customer).where(Customer.phone == phone).order_by(Customer.id).limit(1)))
    if customer is not None:
        return customer
    return await session.scalar(select(Lead).where(Lead.phone == phone).order_by(Lead.id).limit(1))


async def matching_customer(session: AsyncSession, lead: Lead) -> Customer | None:
    """The customer this lead already is: the same normalised phone, or the same company
    and contact."""
    same = and_(Customer.company == lead.company.strip(),
                Customer.contact == lead.contact.strip())
    if lead.phone:
        same = or_(Customer.phone == lead.phone, same)
    return await surviving(session, await session.scalar(
        select(Customer).where(same).order_by(Customer.id).limit(1)))


async def convert_lead(
    session: AsyncSession, lead: Lead, now: datetime, *, owner: Member, actor: Member
) -> tuple[Customer, bool]:
    """Make the lead a customer owned by `owner`, or link it to the customer it already
    is; returns (customer, created). The lead becomes `converted`."""
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
