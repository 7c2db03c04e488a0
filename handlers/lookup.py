"""`/查客户 关键词`: find leads and customers by phone, e-mail, company or contact name.

Every role may look (service and marketing find the customer they attach an interaction
to); phones are masked in the answer. The keyword is read with the duplicate check's
normalisation (handlers.normalize), and the search uses the same indexed key columns and
company-name grams, never a scan of every record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Context
from bot.router import Router
from handlers.leads import STATUS_NAMES
from handlers.matching import survivor_ids
from handlers.normalize import company_grams, company_keys, contact_key, email_key, phone_key
from handlers.phones import mask_phone
from storage.models import Customer, Lead, MatchGram, Member

router = Router("lookup")

SHOWN = 10
# A keyword's grams found on more records than this say little: the name is searched by
# its rarer grams, or, when all are common, by the few rarest together.
COMMON_GRAM = 2000
RAREST = 3

T_USAGE = "用法：/查客户 关键词（手机号、邮箱、公司名或联系人），例如：/查客户 示例科技"
T_NONE = "没有找到与「{keyword}」相符的线索或客户。"
T_FOUND = "找到 {n} 条与「{keyword}」相符的记录："
T_MORE = "……还有更多记录没有列出，请把关键词写得更具体些。"
T_CUSTOMER = "客户 #{id} {company} · {contact} · {phone}（负责人 {owner}）"
T_LEAD = "线索 #{id} {company} · {contact} · {phone}（{status}，{owner}）"
T_LEAD_UNOWNED = "线索 #{id} {company} · {contact} · {phone}（{status}）"
T_NOBODY = "待分配"
T_TOO_SHORT = "关键词太短，请至少写两个字或完整的电话、邮箱。"


@dataclass(slots=True)
class Hit:
    kind: str  # customer | lead
    record: Customer | Lead


async def search(session: AsyncSession, keyword: str, *, limit: int = SHOWN + 1) -> list[Hit]:
    """Customers, then leads, that match the keyword by any key: the same phone, e-mail or
    full company name first, then the same core or contact, then names holding the
    keyword, newest first within each. A merged-away customer is shown as its survivor."""
    phone, email = phone_key(keyword), email_key(keyword)
    company = company_keys(keyword)
    core = company.core
    contact = contact_key(keyword)
    hits: list[Hit] = []
    for kind, model in (("customer", Customer), ("lead", Lead)):
        exact = [column == value for column, value in (
            (model.phone_key, phone), (model.email_key, email),
            (model.company_full, company.full), (model.company_core, core),
            (model.contact_key, contact)) if value]
        found = await _records(session, model, or_(*exact), limit) if exact else []
        ids = await _gram_ids(session, kind, core) if core else []
        ids = [i for i in ids if i not in {r.id for r in found}]
        if ids:
            # A gram hit is a candidate: its name must hold the keyword's core.
            found += [r for r in await _records(session, model, model.id.in_(ids), limit)
                      if core in (r.company_core or "")]

        def rank(record: Customer | Lead) -> tuple[int, int]:
            if ((phone and record.phone_key == phone) or (email and record.email_key == email)
                    or (company.full and record.company_full == company.full)):
                return 0, -record.id
            if (core and record.company_core == core) or (
                    contact and record.contact_key == contact):
                return 1, -record.id
            return 2, -record.id

        found.sort(key=rank)
        if model is Customer:
            found = await _as_survivors(session, found)
        hits += [Hit(kind, r) for r in found]
    return hits[:limit]


async def _records(session: AsyncSession, model: type[Customer] | type[Lead], condition: Any,
                   limit: int) -> list[Any]:
    query = select(model).where(condition)
    if model is Lead:
        query = query.where(Lead.status != "draft", Lead.customer_id.is_(None))
    return list((await session.scalars(query.order_by(model.id.desc()).limit(limit))).all())


async def _as_survivors(session: AsyncSession, found: list[Customer]) -> list[Customer]:
    """Each merged-away customer replaced by the customer it was merged into, once."""
    merged = {c.id for c in found if c.status == "merged"}
    now_is = await survivor_ids(session, merged) if merged else {}
    out: dict[int, Customer] = {}
    for customer in found:
        now = now_is.get(customer.id, customer.id)
        if now is None or now in out:
            continue
        out[now] = customer if now == customer.id else await session.get(Customer, now)
    return [c for c in out.values() if c is not None]


async def _gram_ids(session: AsyncSession, kind: str, core: str) -> list[int]:
    """Records whose name holds every rare gram of the core (a name part: 示例 in
    深圳示例科技); when every gram is common (示例科技 in a base full of 科技), the
    newest records holding its rarest few together."""
    grams = company_grams(core)
    if not grams:
        return []
    counts = dict((await session.execute(
        select(MatchGram.gram, func.count()).where(MatchGram.kind == kind,
                                                   MatchGram.gram.in_(grams))
        .group_by(MatchGram.gram))).all())
    if any(counts.get(gram, 0) == 0 for gram in grams):
        return []  # a gram nobody has: no name holds the whole keyword
    rare = [gram for gram in grams if counts[gram] <= COMMON_GRAM]
    if not rare:
        rare = sorted(grams, key=counts.__getitem__)[:RAREST]
    rows = await session.execute(
        select(MatchGram.object_id).where(MatchGram.kind == kind, MatchGram.gram.in_(rare))
        .group_by(MatchGram.object_id)
        .having(func.count(func.distinct(MatchGram.gram)) == len(rare))
        .order_by(MatchGram.object_id.desc()).limit(200))
    return [object_id for (object_id,) in rows.all()]


def line(hit: Hit, owners: dict[int, str]) -> str:
    record = hit.record
    shown = {"id": record.id, "company": record.company, "contact": record.contact}
    if isinstance(record, Customer):
        return T_CUSTOMER.format(**shown, phone=mask_phone(record.phone) or "-",
                                 owner=owners.get(record.owner_id or 0, T_NOBODY))
    number = record.phone or record.landline
    status = STATUS_NAMES.get(record.status, record.status)
    if record.assignee_id is None:  # waiting in the queue: 待分配 says it all
        return T_LEAD_UNOWNED.format(**shown, phone=mask_phone(number) or "-", status=status)
    return T_LEAD.format(**shown, phone=mask_phone(number) or "-", status=status,
                         owner=owners.get(record.assignee_id, T_NOBODY))


@router.command("查客户", usage=T_USAGE, summary="/查客户 关键词：查找线索和客户（电话打码）")
async def find_customer(ctx: Context, args: str) -> None:
    keyword = args.strip()
    if not keyword:
        await ctx.reply(T_USAGE)
        return
    if len(keyword) < 2:
        await ctx.reply(T_TOO_SHORT)
        return
    hits = await search(ctx.session, keyword)
    if not hits:
        await ctx.reply(T_NONE.format(keyword=keyword[:40]))
        ctx.outcome = "none"
        return
    ids = {getattr(h.record, "owner_id", None) or getattr(h.record, "assignee_id", None)
           for h in hits}
    ids.discard(None)
    owners = dict((await ctx.session.execute(
        select(Member.id, Member.name).where(Member.id.in_(ids)))).all()) if ids else {}
    lines = [T_FOUND.format(n=min(len(hits), SHOWN), keyword=keyword[:40])]
    lines += [line(hit, owners) for hit in hits[:SHOWN]]
    if len(hits) > SHOWN:
        lines.append(T_MORE)
    await ctx.reply("\n".join(lines))
