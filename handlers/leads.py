"""Leads in the chat: the lead card's buttons, decline reasons, transfers, follow-ups,
/我的线索 and the manager's reassignment. The choosing of reps is in handlers.assignment.
"""

from __future__ import annotations

from sqlalchemy import select

from bot.context import Context
from bot.router import Router, is_number
from cards.model import Button, CardModel
from handlers.assignment import (
    T_WHY_MANAGER,
    T_WHY_TRANSFER,
    close_offer_card,
    current_offer,
    lead_card,
    offer,
    rep_states,
    reroute,
    set_status,
    withdraw_offers,
)
from handlers.availability import unavailable_reason
from handlers.matching import survivor_of
from handlers.merging import carry_with_merges
from handlers.normalize import company_keys
from handlers.phones import mask_phone
from storage.models import Assignment, Card, Customer, FollowUp, Lead, Member

router = Router("leads")

# The roles that attach interactions to customers rather than follow leads.
CUSTOMER_SIDE = ("service", "marketing")
DECLINE_REASONS = ("行业不熟悉", "客户地区太远", "手头线索太多", "信息不全无法联系")

T_NO_LEAD = "没有找到线索 #{id}。"
T_STALE = "这张卡片已经失效：线索 #{id} 目前不在等您处理。发送 /我的线索 查看您的线索。"
T_NOT_YOURS = "线索 #{id} 不是分给您的，无法操作。"
T_ACCEPTED = "{name} 已于 {at} 接受"
T_ACCEPTED_REPLY = "已接受线索 #{id}（{company}）。联系客户后发送「记录 内容」登记跟进。"
T_DECLINE_ASK_TITLE = "拒绝线索 #{id}：请选择原因"
T_DECLINE_ASK_DESC = "点选一个原因，或直接回复原因文字。"
T_DECLINED = "{name} 已于 {at} 拒绝（{reason}）"
T_DECLINED_REPLY = "已拒绝线索 #{id}，原因：{reason}。线索将转给其他同事。"
T_TRANSFER_ASK = "线索 #{id} 要转给谁？请回复「转给 姓名」，例如：转给 王二"
T_TRANSFERRED = "{name} 已于 {at} 转给 {to}"
T_TRANSFERRED_REPLY = "线索 #{id} 已转给 {to}，等待对方接受。"
T_TRANSFER_USAGE = "用法：先在线索卡片上点「转给同事」，再回复「转给 姓名」。"
T_NO_SUCH_MEMBER = "名单里没有「{name}」，请检查姓名。"
T_NOT_A_REP = "{name} 不是销售，不能接收线索。"
T_TARGET_BUSY = "{name} 现在无法接收线索（{why}）。"
T_SELF = "不能转给自己。"
T_RECORD_USAGE = "用法：记录 [公司或线索号] 跟进内容，例如：记录 已电话沟通，下周拜访"
T_RECORD_NO_LEAD = "您目前没有可以登记跟进的线索。先接受一条线索，或写明线索号：记录 12 内容"
T_RECORD_NOT_ACCEPTED = "线索 #{id} 还没有接受，请先在卡片上点「接受」。"
T_RECORDED = "已记录到线索 #{id}（{company}）。"
T_RECORDED_CUSTOMER = "已把这次互动记录到客户 #{id}（{company}）。"
T_RECORD_SUMMARY = "记录 [公司或线索号] 内容：登记一次跟进"
T_RECORD_CUSTOMER_SUMMARY = "记录 客户#编号 内容：把一次互动记到客户名下（也可写公司全称或线索号）"
T_RECORD_CUSTOMER_USAGE = ("用法：记录 客户#编号 内容，例如：记录 客户#12 回访满意；"
                           "也可写公司全称：记录 公司名 内容。客户编号可用 /查客户 查找。")
T_CUSTOMER_UNKNOWN = "找不到客户 #{id}。客户编号可用 /查客户 查找。"
T_CUSTOMER_MERGED = "客户 #{old} 已合并到客户 #{id}，"
T_CUSTOMER_NONE = ("没有找到名称为「{name}」的客户。请写客户编号：记录 客户#编号 内容"
                   "（编号可用 /查客户 查找）。")
T_CUSTOMER_SEVERAL = "有 {n} 位客户与「{name}」相符，请写明客户编号：记录 客户#编号 内容"
T_CUSTOMER_MANY = "与「{name}」相符的客户不止 {n} 位，请写明客户编号：记录 客户#编号 内容"
T_CUSTOMER_LINE = "客户 #{id} {company} · {phone}"
T_CUSTOMER_MORE = "……还有更多，请用 /查客户 查找。"
CUSTOMERS_LISTED = 5
T_RECORD_NOT_YOURS = "线索 #{id} 不在您或您团队的名下，不能登记跟进。"
T_MY_LEADS_EMPTY = "您目前没有进行中的线索。"
T_MY_LEADS_HEAD = "您的进行中线索（{n} 条）："
T_MY_LEADS_REST = "……还有 {n} 条未列出；接受后可用「记录 线索号 内容」登记跟进。"
MY_LEADS_LISTED = 25
T_MY_LEADS_MORE = "卡片只显示前 {n} 条待接受的线索；其余可回复「接受 线索号」。"
T_REASSIGN_ASK = "线索 #{id} 要指派给谁？请回复销售的姓名，例如：王二"
T_REASSIGN_USAGE = "用法：/转派 线索号 姓名，例如：/转派 12 王二"
T_REASSIGNED = "线索 #{id} 已指派给 {to}。"
T_TAKEN_AWAY = "线索 #{id}（{company}）已由 {name} 改派给 {to}，您无需再跟进。"
T_REASSIGN_STATUS = "{name} 已于 {at} 指派给 {to}"
T_NOT_MANAGER = "只有经理和管理员可以指派线索。"
T_ACCEPT_USAGE = "用法：接受 线索号，例如：接受 12"
STATUS_NAMES = {
    "new": "待分配", "assigned": "待接受", "accepted": "已接受", "contacted": "跟进中",
    "converted": "已转化", "lost": "已流失",
}


def _stamp(ctx: Context) -> str:
    return ctx.now.astimezone(ctx.settings.zone).strftime("%m-%d %H:%M")


async def _lead(ctx: Context, object_id: str) -> Lead | None:
    if not is_number(object_id):
        return None
    return await ctx.session.get(Lead, int(object_id))


async def _my_offer(ctx: Context, object_id: str) -> tuple[Lead, Assignment] | None:
    """The lead and the offer the clicker may act on, or None after a polite answer."""
    lead = await _lead(ctx, object_id)
    if lead is None:
        await ctx.reply(T_NO_LEAD.format(id=object_id))
        ctx.outcome = "no_lead"
        return None
    assignment = await current_offer(ctx.session, lead)
    if assignment is None or lead.status != "assigned":
        await ctx.reply(T_STALE.format(id=lead.id))
        ctx.outcome = "stale"
        return None
    if assignment.member_id != ctx.member.id:
        await ctx.reply(T_NOT_YOURS.format(id=lead.id))
        ctx.outcome = "foreign"
        return None
    card_ref = ctx.event.card_ref
    if card_ref and assignment.card_id is not None:
        card = await ctx.session.scalar(select(Card).where(Card.ref == card_ref))
        if card is not None and card.state == "closed":
            await ctx.reply(T_STALE.format(id=lead.id))
            ctx.outcome = "stale"
            return None
    return lead, assignment


async def _remember_click(ctx: Context) -> None:
    """Keep the click's WeCom ResponseCode: it is what lets us update that card."""
    if ctx.event.card_ref and ctx.event.response_code:
        card = await ctx.session.scalar(select(Card).where(Card.ref == ctx.event.card_ref))
        if card is not None:
            card.response_code = ctx.event.response_code


@router.action("accept")
async def accept(ctx: Context, object_id: str, option: str | None) -> None:
    await _remember_click(ctx)
    found = await _my_offer(ctx, object_id)
    if found is None:
        return
    lead, assignment = found
    await _accept(ctx, lead, assignment)


async def _accept(ctx: Context, lead: Lead, assignment: Assignment) -> None:
    assignment.state, assignment.decided_at = "accepted", ctx.now
    assignment.decided_by_id = ctx.member.id
    lead.accepted_at = ctx.now
    set_status(ctx.session, lead, "accepted", ctx.now, ctx.member)
    await close_offer_card(ctx.session, ctx.rt, assignment,
                           T_ACCEPTED.format(name=ctx.member.name, at=_stamp(ctx)))
    ctx.audit("lead.accept", "lead", lead.id, {"status": "assigned"}, {"status": "accepted"})
    await ctx.reply(T_ACCEPTED_REPLY.format(id=lead.id, company=lead.company))


@router.command("接受", roles={"rep"}, usage=T_ACCEPT_USAGE, summary="接受 线索号：接受一条线索")
async def accept_by_text(ctx: Context, args: str) -> None:
    lead_id = args.strip().lstrip("#")
    if not is_number(lead_id):
        await ctx.reply(T_ACCEPT_USAGE)
        return
    found = await _my_offer(ctx, lead_id)
    if found is not None:
        await _accept(ctx, *found)


@router.action("decline")
async def decline(ctx: Context, object_id: str, option: str | None) -> None:
    await _remember_click(ctx)
    found = await _my_offer(ctx, object_id)
    if found is None:
        return
    lead, assignment = found
    if option is not None and option.isdigit() and 1 <= int(option) <= len(DECLINE_REASONS):
        await _decline(ctx, lead, assignment, DECLINE_REASONS[int(option) - 1])
        return
    await ctx.expect("decline_reason", lead.id)
    await ctx.reply(CardModel(
        title=T_DECLINE_ASK_TITLE.format(id=lead.id), kind="decline", object_id=lead.id,
        description=T_DECLINE_ASK_DESC,
        buttons=[Button(reason, f"decline:{lead.id}:{n}")
                 for n, reason in enumerate(DECLINE_REASONS, start=1)],
    ))


@router.reply("decline_reason")
async def decline_reason(ctx: Context, text: str) -> None:
    pending_lead = await _pending_object(ctx)
    found = await _my_offer(ctx, str(pending_lead))
    if found is None:
        await ctx.clear_expectation()
        return
    await _decline(ctx, *found, text[:200])


async def _pending_object(ctx: Context) -> int:
    from storage.models import PendingReply

    pending = await ctx.session.get(PendingReply, ctx.member.id)
    return pending.object_id if pending else 0


async def _decline(ctx: Context, lead: Lead, assignment: Assignment, reason: str) -> None:
    await ctx.clear_expectation()
    assignment.state, assignment.reason = "declined", reason
    assignment.decided_at, assignment.decided_by_id = ctx.now, ctx.member.id
    await close_offer_card(ctx.session, ctx.rt, assignment,
                           T_DECLINED.format(name=ctx.member.name, at=_stamp(ctx), reason=reason))
    await _close_reason_cards(ctx, lead)
    ctx.audit("lead.decline", "lead", lead.id, {"rep": ctx.member.name}, {"reason": reason})
    await ctx.reply(T_DECLINED_REPLY.format(id=lead.id, reason=reason))
    from handlers.assignment import T_WHAT_DECLINED

    await reroute(ctx.session, ctx.rt, lead, ctx.member, ctx.now,
                  T_WHAT_DECLINED.format(reason=reason))


async def _close_reason_cards(ctx: Context, lead: Lead) -> None:
    from bot.outbox import update_card

    cards = (await ctx.session.scalars(
        select(Card).where(Card.kind == "decline", Card.object_id == lead.id,
                           Card.member_id == ctx.member.id, Card.state == "open")
    )).all()
    for card in cards:
        await update_card(ctx.session, ctx.rt, card,
                          CardModel.from_json(card.body).closed("已提交原因"))


@router.action("transfer")
async def transfer(ctx: Context, object_id: str, option: str | None) -> None:
    await _remember_click(ctx)
    found = await _my_offer(ctx, object_id)
    if found is None:
        return
    lead, _ = found
    await ctx.expect("transfer", lead.id)
    await ctx.reply(T_TRANSFER_ASK.format(id=lead.id))


async def _colleague(ctx: Context, name: str) -> Member | None:
    """The named rep if they can take a lead now; otherwise None after saying why."""
    name = name.strip().lstrip("@")
    target = await ctx.session.scalar(select(Member).where(Member.name == name))
    if target is None:
        for mention in ctx.event.mentions:
            target = await ctx.session.scalar(
                select(Member).where(Member.dingtalk_userid == mention.platform_id))
            if target is not None:
                break
    if target is None:
        await ctx.reply(T_NO_SUCH_MEMBER.format(name=name))
        return None
    if target.id == ctx.member.id:
        await ctx.reply(T_SELF)
        return None
    if target.role != "rep":
        await ctx.reply(T_NOT_A_REP.format(name=target.name))
        return None
    states = (await rep_states(ctx.session, ctx.rt, member_ids=[target.id])).states
    why = unavailable_reason(states[0], ctx.now, ctx.settings.leads.hours, ctx.settings.zone,
                             ctx.rt.calendar_extra)
    # Off duty is no reason to refuse a colleague's or manager's hand-over.
    if why and why != "不在班":
        await ctx.reply(T_TARGET_BUSY.format(name=target.name, why=why))
        return None
    return target


@router.command("转给", roles={"rep"}, usage=T_TRANSFER_USAGE, summary="转给 姓名：把线索转给同事")
async def transfer_to(ctx: Context, args: str) -> None:
    from storage.models import PendingReply

    pending = await ctx.session.get(PendingReply, ctx.member.id)
    if pending is None or pending.kind != "transfer" or not (args or ctx.event.mentions):
        await ctx.reply(T_TRANSFER_USAGE)
        return
    found = await _my_offer(ctx, str(pending.object_id))
    if found is None:
        await ctx.clear_expectation()
        return
    lead, assignment = found
    target = await _colleague(ctx, args)
    if target is None:
        return
    await ctx.clear_expectation()
    assignment.state, assignment.decided_at = "transferred", ctx.now
    assignment.decided_by_id, assignment.reason = ctx.member.id, f"转给 {target.name}"
    await close_offer_card(ctx.session, ctx.rt, assignment, T_TRANSFERRED.format(
        name=ctx.member.name, at=_stamp(ctx), to=target.name))
    await offer(ctx.session, ctx.rt, lead, target, ctx.now, method="transfer",
                why=T_WHY_TRANSFER.format(name=ctx.member.name), actor=ctx.member)
    await ctx.reply(T_TRANSFERRED_REPLY.format(id=lead.id, to=target.name))


@router.reply("transfer")
async def transfer_reply(ctx: Context, text: str) -> None:
    await transfer_to(ctx, text)


# ---- the manager's decision ------------------------------------------------------------


async def _can_direct(ctx: Context) -> bool:
    if ctx.member.role in ("manager", "admin"):
        return True
    await ctx.reply(T_NOT_MANAGER)
    ctx.outcome = "not_allowed"
    return False


@router.action("reassign")
async def reassign_click(ctx: Context, object_id: str, option: str | None) -> None:
    await _remember_click(ctx)
    if not await _can_direct(ctx):
        return
    lead = await _lead(ctx, object_id)
    card = None
    if ctx.event.card_ref:
        card = await ctx.session.scalar(select(Card).where(Card.ref == ctx.event.card_ref))
    waiting = lead is not None and lead.status == "new" and lead.assignee_id is None
    # An SLA card lets the manager override the re-route while the lead is still open.
    overriding = (card is not None and card.kind == "sla" and lead is not None
                  and lead.status in ("new", "assigned", "accepted") and not waiting)
    if not (waiting or overriding) or (card is not None and card.state == "closed"):
        # The lead was decided meanwhile (by another manager, /转派, or the queue).
        await ctx.reply(T_STALE.format(id=object_id))
        ctx.outcome = "stale"
        return
    await ctx.expect("reassign_open" if overriding else "reassign", lead.id)
    await ctx.reply(T_REASSIGN_ASK.format(id=lead.id))


@router.reply("reassign")
async def reassign_reply(ctx: Context, text: str) -> None:
    lead_id = await _pending_object(ctx)
    lead = await ctx.session.get(Lead, lead_id)
    if lead is None or lead.status != "new" or lead.assignee_id is not None:
        await ctx.clear_expectation()
        await ctx.reply(T_STALE.format(id=lead_id))
        return
    await _reassign(ctx, lead_id, text)


@router.reply("reassign_open")
async def reassign_open_reply(ctx: Context, text: str) -> None:
    """The answer to an SLA card: the lead may be held by the next rep meanwhile."""
    await _reassign(ctx, await _pending_object(ctx), text)


@router.command("转派", roles={"manager", "admin"}, usage=T_REASSIGN_USAGE,
                summary="/转派 线索号 姓名：把线索指派给某位销售")
async def reassign_command(ctx: Context, args: str) -> None:
    lead_id, _, name = args.partition(" ")
    if not is_number(lead_id.lstrip("#")) or not name.strip():
        await ctx.reply(T_REASSIGN_USAGE)
        return
    await _reassign(ctx, int(lead_id.lstrip("#")), name)


async def _reassign(ctx: Context, lead_id: int, name: str) -> None:
    lead = await ctx.session.get(Lead, lead_id)
    if lead is None:
        await ctx.clear_expectation()
        await ctx.reply(T_NO_LEAD.format(id=lead_id))
        return
    if lead.status in ("converted", "lost"):
        await ctx.clear_expectation()
        await ctx.reply(T_STALE.format(id=lead_id))
        return
    target = await _colleague(ctx, name)
    if target is None:
        return
    await ctx.clear_expectation()
    previous = await ctx.session.get(Member, lead.assignee_id) if lead.assignee_id else None
    await withdraw_offers(ctx.session, ctx.rt, lead)
    await _close_reassign_cards(ctx, lead, target)
    if previous is not None and previous.id != target.id:
        await ctx.send(previous, T_TAKEN_AWAY.format(id=lead.id, company=lead.company,
                                                     name=ctx.member.name, to=target.name))
    ctx.audit("lead.reassign", "lead", lead.id,
              {"assignee_id": lead.assignee_id}, {"assignee": target.name})
    await offer(ctx.session, ctx.rt, lead, target, ctx.now, method="manager",
                why=T_WHY_MANAGER.format(name=ctx.member.name), actor=ctx.member)
    await ctx.reply(T_REASSIGNED.format(id=lead.id, to=target.name))


async def _close_reassign_cards(ctx: Context, lead: Lead, target: Member) -> None:
    from bot.outbox import update_card

    cards = (await ctx.session.scalars(
        select(Card).where(Card.kind.in_(("reassign", "sla")), Card.object_id == lead.id,
                           Card.state == "open")
    )).all()
    status = T_REASSIGN_STATUS.format(name=ctx.member.name, at=_stamp(ctx), to=target.name)
    for card in cards:
        await update_card(ctx.session, ctx.rt, card, CardModel.from_json(card.body).closed(status))


# ---- follow-ups and the rep's list ------------------------------------------------------


async def _target_lead(ctx: Context, args: str) -> tuple[Lead | None, str]:
    """The lead a follow-up is about: a lead number, a company, or my current lead."""
    first, _, rest = args.partition(" ")
    mine = select(Lead).where(Lead.assignee_id == ctx.member.id)
    if is_number(first.lstrip("#")) and rest:
        return await ctx.session.get(Lead, int(first.lstrip("#"))), rest.strip()
    if rest and len(first) >= 2:
        lead = await ctx.session.scalar(
            mine.where(Lead.company.contains(first), Lead.status.in_(("accepted", "contacted")))
            .order_by(Lead.id.desc()).limit(1)
        )
        if lead is not None:
            return lead, rest.strip()
    lead = await ctx.session.scalar(
        mine.where(Lead.status.in_(("accepted", "contacted")))
        .order_by(Lead.last_activity_at.desc().nulls_last(), Lead.accepted_at.desc())
        .limit(1)
    )
    return lead, args


def named_number(word: str) -> tuple[bool, int | None]:
    """Whether the word names a customer by number, and the number: 客户12 and 客户#12 do;
    a bare 客户 or 客户#… means one but gives none; 客户之家科技 is a company's name."""
    if not word.startswith("客户"):
        return False, None
    rest = word.removeprefix("客户")
    if is_number(rest.removeprefix("#")):
        return True, int(rest.removeprefix("#"))
    return (not rest or rest.startswith("#")), None


async def _customers_named(ctx: Context, name: str) -> list[Customer]:
    """The active customers a company name names: those with its full key (the region
    kept: 深圳星河示例电子), else those sharing its core (星河示例电子)."""
    keys = company_keys(name)
    for column, key in ((Customer.company_full, keys.full), (Customer.company_core, keys.core)):
        if not key:
            continue
        found = (await ctx.session.scalars(
            select(Customer).where(column == key, Customer.status != "merged")
            .order_by(Customer.id).limit(CUSTOMERS_LISTED + 1))).all()
        if found:
            return list(found)
    return []


async def _record_for_customer(ctx: Context, args: str) -> None:
    """Service and marketing attach an interaction to the customer the first word names:
    客户#12 (a merged-away customer's survivor), or a company name naming exactly one."""
    first, _, rest = args.strip().partition(" ")
    content = rest.strip()
    by_number, number = named_number(first)
    if not content or (by_number and number is None):
        await ctx.reply(T_RECORD_CUSTOMER_USAGE)
        return
    if number is not None:
        survivor_id = await survivor_of(ctx.session, number)
        customer = await ctx.session.get(Customer, survivor_id) if survivor_id else None
        if customer is None:
            await ctx.reply(T_CUSTOMER_UNKNOWN.format(id=number))
            ctx.outcome = "no_customer"
            return
        if customer.id == number:
            await _attach(ctx, customer, content)
            return
        row = await _attach(ctx, customer, content,
                            T_CUSTOMER_MERGED.format(old=number, id=customer.id))
        await carry_with_merges(ctx.session, "follow_ups", row.id, number)
        return
    found = await _customers_named(ctx, first)
    if len(found) == 1:
        await _attach(ctx, found[0], content)
        return
    ctx.outcome = "ambiguous" if found else "no_customer"
    if not found:
        await ctx.reply(T_CUSTOMER_NONE.format(name=first[:40]))
        return
    head = T_CUSTOMER_SEVERAL if len(found) <= CUSTOMERS_LISTED else T_CUSTOMER_MANY
    lines = [head.format(n=min(len(found), CUSTOMERS_LISTED), name=first[:40])]
    lines += [T_CUSTOMER_LINE.format(id=c.id, company=c.company, phone=mask_phone(c.phone) or "-")
              for c in found[:CUSTOMERS_LISTED]]
    if len(found) > CUSTOMERS_LISTED:
        lines.append(T_CUSTOMER_MORE)
    await ctx.reply("\n".join(lines))


async def _attach(ctx: Context, customer: Customer, content: str,
                  prefix: str = "") -> FollowUp:
    row = FollowUp(lead_id=None, customer_id=customer.id, member_id=ctx.member.id,
                   kind="interaction", content=content, at=ctx.now)
    ctx.session.add(row)
    await ctx.session.flush()
    await ctx.reply(prefix + T_RECORDED_CUSTOMER.format(id=customer.id, company=customer.company))
    return row


async def _may_record(ctx: Context, lead: Lead) -> bool:
    """Reps log on their own leads, managers on their reps' leads; service and marketing
    attach interactions to any lead."""
    if ctx.member.role in CUSTOMER_SIDE or lead.assignee_id == ctx.member.id:
        return True
    if ctx.member.role == "manager" and lead.assignee_id is not None:
        owner = await ctx.session.get(Member, lead.assignee_id)
        return owner is not None and owner.manager_id == ctx.member.id
    return False


@router.command("记录", roles={"rep", "manager", *CUSTOMER_SIDE}, usage=T_RECORD_USAGE,
                summary=T_RECORD_SUMMARY,
                role_summaries=dict.fromkeys(CUSTOMER_SIDE, T_RECORD_CUSTOMER_SUMMARY))
async def record(ctx: Context, args: str) -> None:
    side = ctx.member.role in CUSTOMER_SIDE
    if not args or is_number(args.strip().lstrip("#")):
        # Nothing to record, or only the lead's number.
        await ctx.reply(T_RECORD_CUSTOMER_USAGE if side else T_RECORD_USAGE)
        return
    if side and not is_number(args.split(" ", 1)[0].lstrip("#")):
        # Service and marketing have no leads of their own: a word that is not a lead's
        # number names a customer.
        await _record_for_customer(ctx, args)
        return
    lead, content = await _target_lead(ctx, args)
    named = args.split(" ", 1)[0].lstrip("#")
    if lead is None and is_number(named) and " " in args:
        await ctx.reply(T_NO_LEAD.format(id=named))
        return
    if lead is None:
        await ctx.reply(T_RECORD_NO_LEAD)
        return
    if not await _may_record(ctx, lead):
        await ctx.reply(T_RECORD_NOT_YOURS.format(id=lead.id))
        ctx.outcome = "not_allowed"
        return
    if lead.assignee_id == ctx.member.id and lead.status == "assigned":
        await ctx.reply(T_RECORD_NOT_ACCEPTED.format(id=lead.id))
        return
    kind = "note" if ctx.member.role == "rep" else "interaction"
    if ctx.event.kind == "voice":
        kind = "voice_asr"  # the platform's transcript of a voice note
    ctx.session.add(FollowUp(lead_id=lead.id, member_id=ctx.member.id, kind=kind,
                             content=content, at=ctx.now))
    # A follow-up by the sales side keeps the lead out of the pool (公海); an interaction
    # that service or marketing attaches does not, nor does it become the rep's current lead.
    if ctx.member.role in ("rep", "manager"):
        lead.last_activity_at = ctx.now
    if lead.status == "accepted" and ctx.member.id == lead.assignee_id:
        lead.contacted_at = ctx.now
        set_status(ctx.session, lead, "contacted", ctx.now, ctx.member, "首次跟进")
    await ctx.reply(T_RECORDED.format(id=lead.id, company=lead.company))


@router.command("我的线索", roles={"rep"}, usage="/我的线索", summary="/我的线索：我的进行中线索")
async def my_leads(ctx: Context, args: str) -> None:
    leads = (await ctx.session.scalars(
        select(Lead).where(Lead.assignee_id == ctx.member.id,
                           Lead.status.in_(("assigned", "accepted", "contacted")))
        .order_by(Lead.id)
    )).all()
    if not leads:
        await ctx.reply(T_MY_LEADS_EMPTY)
        return
    lines = [T_MY_LEADS_HEAD.format(n=len(leads))]
    # Waiting offers first; one message stays under WeCom's 2,048 bytes of text.
    ordered = sorted(leads, key=lambda lead: (lead.status != "assigned", lead.id))
    for lead in ordered[:MY_LEADS_LISTED]:
        lines.append(f"#{lead.id} {lead.company[:20]} · {lead.contact[:8]} · "
                     f"{STATUS_NAMES.get(lead.status, lead.status)}")
    if len(leads) > MY_LEADS_LISTED:
        lines.append(T_MY_LEADS_REST.format(n=len(leads) - MY_LEADS_LISTED))
    waiting = [lead for lead in leads if lead.status == "assigned"]
    limit = ctx.settings.outbox.cards_per_digest
    if len(waiting) > limit:
        lines.append(T_MY_LEADS_MORE.format(n=limit))
    await ctx.reply("\n".join(lines))
    for lead in waiting[:limit]:
        assignment = await current_offer(ctx.session, lead)
        if assignment is None:
            continue
        await ctx.reply(lead_card(lead, ctx.rt, assignment.why or ""))
