"""Converting a lead into a customer: the rep's `/转化 线索号`, the manager's approval card,
approve and reject (with the reason the rep is told).

Owns the conversion Approval; the customer itself is made in handlers.customers. Reps
have no command that creates a customer: this approval is the only way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.context import Context
from bot.outbox import open_cards, update_card
from bot.router import Router, is_number
from cards.model import Button, CardField, CardModel
from handlers.assignment import lead_fields, manager_of
from handlers.customers import convert_lead, lead_keys, lock_door, matching_customer
from handlers.leads import STATUS_NAMES
from handlers.matching import survivor_of
from handlers.phones import mask_phone
from storage.models import Approval, Customer, FollowUp, Lead, Member, PendingReply

if TYPE_CHECKING:
    from bot.runtime import Runtime

router = Router("conversion")

MIN_FOLLOW_UPS = 3  # PRODUCT: a lead becomes a customer after at least 3 logged follow-ups
KIND = "conversion"

T_USAGE = "用法：/转化 线索号，例如：/转化 12"
T_NO_LEAD = "没有找到线索 #{id}。"
T_NOT_YOURS = "线索 #{id} 不在您的名下，只有负责的销售可以申请转化。"
T_CONVERTED_ALREADY = "线索 #{id} 已经转化为客户 #{customer}。"
T_PENDING = "线索 #{id} 已在审批中，请等待 {managers} 审批。"
T_TOO_FEW = ("线索 #{id} 已跟进 {done} 次，申请转化至少要 {need} 次，还差 {missing} 次。"
             "发送「记录 {id} 内容」登记跟进。")
T_NOT_CONTACTED = "线索 #{id} 目前是「{status}」，只有跟进中的线索可以申请转化。"
T_NO_APPROVER = "没有可以审批的经理或管理员，请联系管理员。"
T_REQUESTED = "已提交线索 #{id}（{company}）的转化申请，等待 {managers} 审批。"
T_CARD_TITLE = "转化审批：线索 #{id}"
T_CARD_DESC = "{rep} 申请把这条线索转化为客户。"
T_FOLLOW_UPS = "跟进次数"
T_FOLLOW_UPS_VALUE = "{n} 次"
T_OWNER = "负责销售"
T_APPROVE, T_REJECT = "同意转化", "驳回"
T_NO_APPROVAL = "没有找到这条审批。"
T_DECIDED = "这张卡片已经失效：这条审批{state}。"
STATE_NAMES = {"approved": "已同意", "rejected": "已驳回", "withdrawn": "已失效",
               "pending": "正在处理"}
T_NOT_APPROVER = "只有 {rep} 的经理或管理员可以审批这条申请，您的点击没有改变任何内容。"
T_LEAD_CHANGED = "线索 #{id} 已不在 {rep} 名下跟进（{status}），这条申请已失效。"
T_WITHDRAWN_STATUS = "线索已变化，申请已失效"
T_APPROVED_STATUS = "{name} 已于 {at} 同意，客户 #{customer}"
T_APPROVED = "已同意：线索 #{id} 已转化为客户 #{customer}（{company}），已告知 {rep}。"
T_LINKED = "已同意：线索 #{id} 与已有客户 #{customer}（{company}）相同，已关联，未重复创建。"
T_APPROVED_REP = "您的线索 #{id}（{company}）已由 {name} 同意转化，客户编号 #{customer}。"
T_LINKED_REP = "您的线索 #{id}（{company}）已由 {name} 同意转化，关联到已有客户 #{customer}。"
T_SIMILAR = "检测到相似客户：{contact} | {company} | {phone}（客户 #{id}，负责人 {owner}）"
T_LINK = "关联到客户 #{id}"
T_LINK_GONE = ("卡片上的客户 #{id} 已不存在，无法关联，这次点击没有改变任何内容。"
               "请选择「仍新建客户」或「驳回」。")
T_CREATE = "仍新建客户"
T_SIMILAR_NOW = ("申请提交后出现了相似客户 #{customer}（{company}），未做任何改动。卡片已更新，"
                 "请选择「关联到客户 #{customer}」或「仍新建客户」。")
T_REJECT_ASK = "请回复驳回线索 #{id} 转化申请的原因，{rep} 会收到。"
T_REJECTED_STATUS = "{name} 已于 {at} 驳回（{reason}）"
T_REJECTED = "已驳回线索 #{id} 的转化申请，已把原因告知 {rep}。"
T_REJECTED_REP = ("您的线索 #{id}（{company}）转化申请被 {name} 驳回，原因：{reason}。"
                  "继续跟进后可再次发送 /转化 {id}。")


def _stamp(ctx: Context) -> str:
    return ctx.now.astimezone(ctx.settings.zone).strftime("%m-%d %H:%M")


async def _follow_ups(ctx: Context, lead: Lead) -> int:
    return await ctx.session.scalar(
        select(func.count()).select_from(FollowUp)
        # the sales side's follow-ups; an interaction service or marketing attached is not
        .where(FollowUp.lead_id == lead.id, FollowUp.kind != "interaction")) or 0


async def _pending_approval(ctx: Context, lead: Lead) -> Approval | None:
    return await ctx.session.scalar(
        select(Approval).where(Approval.kind == KIND, Approval.object_id == lead.id,
                               Approval.state == "pending").limit(1))


def _names(members: list[Member]) -> str:
    return "、".join(m.name for m in members)


@router.command("转化", roles={"rep"}, usage=T_USAGE, summary="/转化 线索号：申请把线索转化为客户")
async def request_conversion(ctx: Context, args: str) -> None:
    number = args.strip().lstrip("#")
    if not is_number(number):
        await ctx.reply(T_USAGE)
        return
    lead = await ctx.session.get(Lead, int(number))
    if lead is None:
        await ctx.reply(T_NO_LEAD.format(id=number))
        ctx.outcome = "no_lead"
        return
    if lead.assignee_id != ctx.member.id:
        await ctx.reply(T_NOT_YOURS.format(id=lead.id))
        ctx.outcome = "not_allowed"
        return
    if lead.status == "converted":
        await ctx.reply(T_CONVERTED_ALREADY.format(id=lead.id, customer=lead.customer_id))
        return
    managers = await manager_of(ctx.session, ctx.member)
    if await _pending_approval(ctx, lead) is not None:
        await ctx.reply(T_PENDING.format(id=lead.id, managers=_names(managers)))
        return
    done = await _follow_ups(ctx, lead)
    if done < MIN_FOLLOW_UPS:
        await ctx.reply(T_TOO_FEW.format(id=lead.id, done=done, need=MIN_FOLLOW_UPS,
                                         missing=MIN_FOLLOW_UPS - done))
        return
    if lead.status != "contacted":
        await ctx.reply(T_NOT_CONTACTED.format(
            id=lead.id, status=STATUS_NAMES.get(lead.status, lead.status)))
        return
    if not managers:
        await ctx.reply(T_NO_APPROVER)
        return
    approval = Approval(kind=KIND, object_id=lead.id, requester_id=ctx.member.id,
                        state="pending", created_at=ctx.now)
    ctx.session.add(approval)
    await ctx.session.flush()
    similar = await matching_customer(ctx.session, lead)
    approval.customer_id = similar.id if similar else None
    owner = await ctx.session.get(Member, similar.owner_id) if similar and similar.owner_id \
        else None
    card = approval_card(approval, lead, ctx.member, done, ctx.rt, similar=similar,
                         similar_owner=owner)
    for manager in managers:
        await ctx.send(manager, card)
    ctx.audit("approval.request", "approval", approval.id, None,
              {"kind": KIND, "lead_id": lead.id, "follow_ups": done})
    await ctx.reply(T_REQUESTED.format(id=lead.id, company=lead.company,
                                       managers=_names(managers)))


def approval_card(
    approval: Approval, lead: Lead, rep: Member, follow_ups: int, rt: Runtime, *,
    similar: Customer | None = None, similar_owner: Member | None = None,
) -> CardModel:
    """The manager's card; with a similar customer already on file, the manager links the
    lead to it or creates a new customer anyway, instead of a plain approve."""
    fields = lead_fields(lead, rt) + [
        CardField(T_OWNER, rep.name),
        CardField(T_FOLLOW_UPS, T_FOLLOW_UPS_VALUE.format(n=follow_ups)),
    ]
    buttons = [Button(T_APPROVE, f"approve:{approval.id}", "primary")]
    description = T_CARD_DESC.format(rep=rep.name)
    if similar is not None:
        description += "\n" + T_SIMILAR.format(
            contact=similar.contact, company=similar.company, phone=mask_phone(similar.phone),
            id=similar.id, owner=similar_owner.name if similar_owner else "-")
        buttons = [Button(T_LINK.format(id=similar.id), f"link:{approval.id}:approval",
                          "primary"),
                   Button(T_CREATE, f"create:{approval.id}:approval")]
    return CardModel(
        title=T_CARD_TITLE.format(id=lead.id), kind="approval", object_id=approval.id,
        description=description, fields=fields,
        buttons=[*buttons, Button(T_REJECT, f"reject:{approval.id}", "danger")],
    )


async def _open_approval(
    ctx: Context, object_id: str, *, card_closed: bool = False
) -> tuple[Approval, Lead, Member] | None:
    """The pending conversion the sender may decide, or None after a polite answer."""
    approval = await ctx.session.get(Approval, int(object_id)) if is_number(object_id) else None
    rep = await ctx.session.get(Member, approval.requester_id) if approval else None
    if approval is None or approval.kind != KIND or rep is None:
        await ctx.reply(T_NO_APPROVAL)
        ctx.outcome = "no_approval"
        return None
    if ctx.member.role != "admin" and rep.manager_id != ctx.member.id:
        await ctx.reply(T_NOT_APPROVER.format(rep=rep.name))
        ctx.outcome = "foreign"
        return None
    if approval.state != "pending" or card_closed:
        await ctx.reply(T_DECIDED.format(state=STATE_NAMES.get(approval.state, "")))
        ctx.outcome = "stale"
        return None
    lead = await ctx.session.get(Lead, approval.object_id)
    if lead is None or lead.status != "contacted" or lead.assignee_id != rep.id:
        # Lost, reassigned or reopened since the request: this approval no longer fits.
        approval.state, approval.decided_at = "withdrawn", ctx.now
        await _close_cards(ctx, approval, T_WITHDRAWN_STATUS)
        status = STATUS_NAMES.get(lead.status, lead.status) if lead else "-"
        await ctx.reply(T_LEAD_CHANGED.format(id=approval.object_id, rep=rep.name,
                                              status=status))
        ctx.outcome = "stale"
        return None
    return approval, lead, rep


async def _clicked_approval(ctx: Context, object_id: str) -> tuple[Approval, Lead, Member] | None:
    card = await ctx.clicked_card()
    return await _open_approval(ctx, object_id,
                                card_closed=card is not None and card.state == "closed")


async def _close_cards(ctx: Context, approval: Approval, status: str) -> None:
    """Every manager's copy of the card shows the decision."""
    for card in await open_cards(ctx.session, "approval", approval.id):
        await update_card(ctx.session, ctx.rt, card, CardModel.from_json(card.body).closed(status))


@router.action("approve")
async def approve(ctx: Context, object_id: str, option: str | None) -> None:
    await decide(ctx, object_id, "approve")


async def decide(ctx: Context, object_id: str, how: str) -> None:
    """approve: a new customer, or the one the lead already is; link: the similar
    customer the card showed; create: a new customer although one looked similar."""
    found = await _clicked_approval(ctx, object_id)
    if found is None:
        return
    approval, lead, rep = found
    link_to = None
    if how == "link":
        link_to = await _offered_customer(ctx, approval, lead)
        if link_to is None:
            await ctx.reply(T_LINK_GONE.format(id=approval.customer_id))
            ctx.outcome = "stale"
            return
    await lock_door(ctx.session, [lead_keys(lead)])
    if how == "approve":
        # A plain card offered no customer: one stored since is shown, never linked unseen.
        similar = await matching_customer(ctx.session, lead)
        if similar is not None:
            await _offer(ctx, approval, lead, rep, similar)
            return
    await ctx.clear_expectation("reject_reason", approval.id)
    customer, created = await convert_lead(ctx.session, lead, ctx.now, owner=rep,
                                           actor=ctx.member, link_to=link_to,
                                           create=link_to is None)
    approval.state, approval.decided_at = "approved", ctx.now
    approval.decided_by_id = ctx.member.id
    ctx.audit("approval.approve", "approval", approval.id, {"state": "pending"},
              {"state": "approved", "customer_id": customer.id, "linked": not created})
    await _close_cards(ctx, approval, T_APPROVED_STATUS.format(
        name=ctx.member.name, at=_stamp(ctx), customer=customer.id))
    said = {"id": lead.id, "company": customer.company, "customer": customer.id}
    if created:
        await ctx.send(rep, T_APPROVED_REP.format(**said, name=ctx.member.name))
        await ctx.reply(T_APPROVED.format(**said, rep=rep.name))
    else:
        await ctx.send(rep, T_LINKED_REP.format(**said, name=ctx.member.name))
        await ctx.reply(T_LINKED.format(**said))


async def _offer(ctx: Context, approval: Approval, lead: Lead, rep: Member,
                 similar: Customer) -> None:
    """Every copy of the card now offers the similar customer: link, create or reject."""
    approval.customer_id = similar.id
    owner = await ctx.session.get(Member, similar.owner_id) if similar.owner_id else None
    card = approval_card(approval, lead, rep, await _follow_ups(ctx, lead), ctx.rt,
                         similar=similar, similar_owner=owner)
    for sent in await open_cards(ctx.session, "approval", approval.id):
        await update_card(ctx.session, ctx.rt, sent, card)
    await ctx.reply(T_SIMILAR_NOW.format(customer=similar.id, company=similar.company))
    ctx.outcome = "similar"


async def _offered_customer(ctx: Context, approval: Approval, lead: Lead) -> Customer | None:
    """The customer the card offered (its survivor if it was merged since), else None.
    A card from before the offer was stored falls back to today's best match."""
    if approval.customer_id is None:
        return await matching_customer(ctx.session, lead)
    survivor_id = await survivor_of(ctx.session, approval.customer_id)
    return await ctx.session.get(Customer, survivor_id) if survivor_id else None


@router.action("reject")
async def reject(ctx: Context, object_id: str, option: str | None) -> None:
    found = await _clicked_approval(ctx, object_id)
    if found is None:
        return
    approval, lead, rep = found
    await ctx.expect("reject_reason", approval.id)
    await ctx.reply(T_REJECT_ASK.format(id=lead.id, rep=rep.name))


@router.reply("reject_reason")
async def reject_reason(ctx: Context, text: str) -> None:
    pending = await ctx.session.get(PendingReply, ctx.member.id)
    await ctx.clear_expectation()
    found = await _open_approval(ctx, str(pending.object_id if pending else 0))
    if found is None:
        return
    approval, lead, rep = found
    reason = text[:200]
    approval.state, approval.reason = "rejected", reason
    approval.decided_at, approval.decided_by_id = ctx.now, ctx.member.id
    ctx.audit("approval.reject", "approval", approval.id, {"state": "pending"},
              {"state": "rejected", "reason": reason})
    await _close_cards(ctx, approval, T_REJECTED_STATUS.format(
        name=ctx.member.name, at=_stamp(ctx), reason=reason))
    await ctx.send(rep, T_REJECTED_REP.format(id=lead.id, company=lead.company,
                                              name=ctx.member.name, reason=reason))
    await ctx.reply(T_REJECTED.format(id=lead.id, rep=rep.name))
