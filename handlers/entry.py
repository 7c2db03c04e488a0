"""Lead entry from the phone: `新线索 公司 联系人 电话`, and the card that asks for the
missing tags one at a time while the lead waits as a draft.

Owns the parsing of the typed line and the draft's tags; storing and routing the lead is
handlers.intake's, the duplicate check handlers.customers'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from bot.context import Context
from bot.outbox import open_cards, update_card
from bot.router import Router, is_number
from cards.model import Button, CardField, CardModel
from config.settings import Settings
from handlers.assignment import lead_fields
from handlers.customers import Match, check_door, lead_keys, load_match, lock_door
from handlers.enquiries import record_enquiry
from handlers.intake import (
    DRAFT,
    URGENCIES,
    LeadInput,
    canonical_tag,
    create_lead,
    publish_draft,
)
from handlers.matching import keys_for
from handlers.normalize import phone_key
from handlers.phones import PhoneError, mask_phone, parse_phone
from storage.models import Customer, Lead, LeadStatusChange, Member, PendingReply

if TYPE_CHECKING:
    from bot.runtime import Runtime

router = Router("entry")

T_USAGE = ("用法：新线索 公司 联系人 电话，例如：新线索 深圳示例科技 张伟 13800001234；"
           "可以加上标签，如：高 工业 展会")
T_NO_PHONE = "没有找到电话号码。" + T_USAGE
T_TWO_PHONES = "写了不止一个电话号码，请只写一个。" + T_USAGE
T_BAD_PHONE = "电话「{phone}」有误：{reason}。"
T_MISSING = "需要公司、联系人和电话三项。" + T_USAGE
T_UNCLEAR = ("分不清哪个是公司、哪个是联系人（联系人写 2–4 个字的姓名，公司名最好带"
             "「公司」「科技」等字样）。" + T_USAGE)
T_TOO_LONG = "公司名太长了（最多 {n} 个字）。"
T_SIMILAR_TITLE = "检测到相似客户"
T_SIMILAR = "检测到相似客户：{contact} | {company} | {phone}"
T_SIMILAR_WHICH = "已有记录"
T_SIMILAR_OWNER = "负责人"
T_SIMILAR_SAME = "相同之处"
T_SIMILAR_NEW = "您录入的"
T_KIND_CUSTOMER, T_KIND_LEAD = "客户", "线索"
REASON_NAMES = {"strong": "手机、公司、联系人都相同", "phone": "电话", "email": "邮箱",
                "company": "公司名称"}
T_LINK_BUTTON = "关联到已有记录"
T_CREATE_BUTTON = "仍然新建"
T_LINKED_STATUS = "已关联到{kind} #{id}，未新建"
T_CREATED_STATUS = "已确认不是同一客户，继续新建"
T_GONE_STATUS = "已有记录已变化，继续新建"
T_RETYPED_STATUS = "已重新录入，以新的一条为准"
T_LINKED_REPLY = ("已关联到{kind} #{id}（{company} · {contact} · {phone}，负责人 {owner}），"
                  "没有新建线索。")
T_SIMILAR_GONE = "刚才那条相似记录已经不在了，线索 #{id} 照常新建。"
T_OWNER = "负责人 {name}"
T_NO_OWNER = "待分配"
T_ASK_TITLE = "补全线索 #{id} 的标签"
T_ASK_DESC = "请选择{field}（还差 {left} 项）。点选按钮，或直接回复。"
T_ASK_MORE = "其他选项请直接回复：{choices}"
T_DONE_STATUS = "已补全：{tags}"
T_KEPT = "线索 #{id}（{company}）已录入，归您跟进。联系客户后发送「记录 内容」登记跟进。"
T_ROUTED = "线索 #{id}（{company}）已录入，已分给 {rep}。"
T_QUEUED = "线索 #{id}（{company}）已录入，暂无可接单的销售，已进入待分配队列。"
T_NO_LEAD = "没有找到线索 #{id}。"
T_STALE = "这张卡片已经失效：线索 #{id} 的标签已经补全。"
T_SIMILAR_STALE = "这张卡片已经处理过了（线索 #{id}），这次点击没有改变任何内容。"
T_NOT_YOURS = "线索 #{id} 不是您录入的，不能补全它的标签。"
T_BAD_CHOICE = "没有「{text}」这个{field}。请点选卡片上的按钮，或回复：{choices}"
FIELD_NAMES = {"urgency": "紧急程度", "industry": "行业", "source": "来源渠道"}

TAG_FIELDS = ("urgency", "industry", "source")
MAX_BUTTONS = 6  # WeCom draws at most 6 buttons on a card
MAX_COMPANY = 200

_SEPARATORS = re.compile(r"[\s,;，；、]+")
_PHONE_PART = re.compile(r"^[+\d()\-.]*\d[+\d()\-.]*$")
# `0571-88001234 转 801`: the extension mark joined to its digits, as one word.
_SPACED_EXTENSION = re.compile(r"(?<=\d)\s*(转|分机|ext\.?)\s*(?=\d)", re.IGNORECASE)
_EXTENSION = re.compile(r"^(?:转|分机|ext\.?|x)\d{1,6}$", re.IGNORECASE)
_CJK_NAME = re.compile(r"^[\u4e00-\u9fff·]{2,4}$")
_LATIN_NAME = re.compile(r"^[A-Za-z][A-Za-z.'\-]{1,29}$")
COMPANY_MARKS = (
    "公司", "科技", "集团", "厂", "有限", "股份", "实业", "工作室", "事务所", "医院", "诊所",
    "学校", "学院", "大学", "中心", "研究所", "银行", "商行", "商贸", "贸易", "电子", "机械",
    "制造", "技术", "网络", "信息", "工业", "店", "co.", "ltd", "inc", "corp", "llc", "gmbh",
)


class EntryError(ValueError):
    """The typed line is not a lead; the message says why, in the bot's words."""


@dataclass(slots=True, frozen=True)
class Entry:
    company: str
    contact: str
    phone: str  # normalised, as stored
    tags: dict[str, str] = field(default_factory=dict)  # field → canonical value


def tag_choices(settings: Settings) -> dict[str, dict[str, str]]:
    """Each required tag's values, {English key: Chinese label}, in the order asked."""
    return {"urgency": URGENCIES, "industry": settings.leads.industries,
            "source": settings.leads.sources}


def parse_entry(text: str, choices: dict[str, dict[str, str]]) -> Entry:
    """`深圳示例科技 张伟 13800001234 高` in any order where it is unambiguous.

    The phone is the run of digit words; a word that is a tag value fills that tag; of
    the two words left, the company carries a mark such as 公司 or 科技, or is the
    longer, and the contact is a name of 2–4 characters.
    """
    phones: list[list[str]] = []
    words: list[str] = []
    tags: dict[str, str] = {}
    in_phone = False
    text = _SPACED_EXTENSION.sub(r" \1", text)
    for token in (t for t in _SEPARATORS.split(text) if t):
        if _PHONE_PART.match(token) or (in_phone and _EXTENSION.match(token)):
            if not in_phone:
                phones.append([])
            phones[-1].append(token)
            in_phone = True
            continue
        in_phone = False
        tag = _tag(token, choices, tags)
        if tag is not None:
            tags[tag[0]] = tag[1]
        else:
            words.append(token)
    found = [number for run in phones for number in _numbers(run)]
    if not found:
        raise EntryError(T_NO_PHONE)
    if len(found) > 1:
        raise EntryError(T_TWO_PHONES)
    phone = found[0]
    if len(words) < 2:
        raise EntryError(T_MISSING)
    pair = company_and_contact(words) if len(words) == 2 else None
    if pair is None:
        raise EntryError(T_UNCLEAR)
    if len(pair[0]) > MAX_COMPANY:
        raise EntryError(T_TOO_LONG.format(n=MAX_COMPANY))
    return Entry(pair[0], pair[1], phone, tags)


def _numbers(run: list[str]) -> list[str]:
    """The phone(s) in a run of digit words: `138 0000 1234` is one, two whole numbers are
    two; anything else is a bad phone, with the reason handlers.phones gives."""
    raw = "".join(run)
    try:
        return [parse_phone(raw).stored]
    except PhoneError as error:
        reason = error
    try:
        numbers = [parse_phone(part).stored for part in run] if len(run) > 1 else None
    except PhoneError:
        numbers = None
    if numbers is None:
        raise EntryError(T_BAD_PHONE.format(phone=raw, reason=reason))
    return numbers


def _tag(
    token: str, choices: dict[str, dict[str, str]], taken: dict[str, str]
) -> tuple[str, str] | None:
    for name, values in choices.items():
        value = canonical_tag(token, values)
        if value is not None and name not in taken:
            return name, value
    return None


def company_and_contact(words: list[str]) -> tuple[str, str] | None:
    """(company, contact) of two words, or None when either order could be meant."""
    first, second = words
    marked = [w for w in words if looks_like_company(w)]
    if len(marked) == 1:
        company = marked[0]
        contact = second if company is first else first
    elif not marked and len(first) != len(second):
        company, contact = (first, second) if len(first) > len(second) else (second, first)
    else:
        return None
    return (company, contact) if looks_like_name(contact) else None


def looks_like_company(word: str) -> bool:
    folded = word.casefold()
    return any(mark in folded for mark in COMPANY_MARKS)


def looks_like_name(word: str) -> bool:
    return bool(_CJK_NAME.match(word) or _LATIN_NAME.match(word))


def missing_tags(lead: Lead) -> list[str]:
    return [name for name in TAG_FIELDS if not getattr(lead, name)]


def tags_card(lead: Lead, rt: Runtime) -> CardModel:
    """The card asking for the lead's next missing tag, one button a value."""
    missing = missing_tags(lead)
    name = missing[0]
    values = tag_choices(rt.settings)[name]
    description = T_ASK_DESC.format(field=FIELD_NAMES[name], left=len(missing))
    if len(values) > MAX_BUTTONS:
        # Limitation: WeCom shows 6 buttons at most; the other values are typed.
        description += T_ASK_MORE.format(choices="、".join(list(values.values())[MAX_BUTTONS:]))
    return CardModel(
        title=T_ASK_TITLE.format(id=lead.id), kind="tags", object_id=lead.id,
        description=description, fields=lead_fields(lead, rt),
        buttons=[Button(label, f"tags:{lead.id}:{name}={key}")
                 for key, label in list(values.items())[:MAX_BUTTONS]],
    )


def _tag_labels(lead: Lead, settings: Settings) -> str:
    labels = (URGENCIES.get(lead.urgency or "", ""),
              settings.leads.industries.get(lead.industry or "", lead.industry or ""),
              settings.leads.sources.get(lead.source or "", lead.source or ""))
    return " / ".join(label for label in labels if label)


# ---- the handlers ---------------------------------------------------------------------


@router.command("新线索", roles={"rep", "marketing"}, usage=T_USAGE,
                summary="新线索 公司 联系人 电话：录入一条线索")
async def new_lead(ctx: Context, args: str) -> None:
    if not args:
        await ctx.reply(T_USAGE)
        return
    try:
        entry = parse_entry(args, tag_choices(ctx.settings))
    except EntryError as error:
        await ctx.reply(str(error))
        ctx.outcome = "bad_input"
        return
    mine = await ctx.session.scalar(
        select(Lead).where(Lead.status == DRAFT, Lead.created_by_id == ctx.member.id,
                           Lead.phone_key == phone_key(entry.phone))
        .order_by(Lead.id.desc()).limit(1))
    if mine is not None:
        ctx.outcome = "duplicate"
        await _retyped(ctx, mine, entry)
        return
    data = LeadInput(company=entry.company, contact=entry.contact, phone=entry.phone,
                     industry=entry.tags.get("industry"), urgency=entry.tags.get("urgency"),
                     source=entry.tags.get("source"))
    probe = keys_for(entry.company, entry.contact, entry.phone, None)
    await lock_door(ctx.session, [probe])
    [check] = await check_door(ctx.session, [probe])
    draft = bool(check.matches) or any(name not in entry.tags for name in TAG_FIELDS)
    lead, _ = await create_lead(ctx.session, ctx.rt, data, ctx.now, origin="chat",
                                creator=ctx.member, draft=draft)
    if check.matches:
        ctx.outcome = "similar"
        await ctx.reply(await similar_card(ctx, lead, check.matches[0]))
    elif draft:
        await _ask(ctx, lead)
    else:
        await _announce(ctx, lead)


async def _retyped(ctx: Context, draft: Lead, entry: Entry) -> None:
    """My own draft typed again (a correction, or more tags): the draft takes what was
    typed now and goes through the check again, so nothing typed is lost and nothing
    skips the door."""
    draft.company, draft.contact, draft.phone = entry.company, entry.contact, entry.phone
    for name, value in entry.tags.items():
        setattr(draft, name, value)
    draft.updated_at = ctx.now
    await _close_similar(ctx, draft, T_RETYPED_STATUS)
    probe = keys_for(draft.company, draft.contact, draft.phone, None)
    await lock_door(ctx.session, [probe])
    [check] = await check_door(ctx.session, [probe], exclude=[("lead", draft.id)])
    if check.matches:
        ctx.outcome = "similar"
        await ctx.reply(await similar_card(ctx, draft, check.matches[0]))
        return
    await _carry_on(ctx, draft)


async def similar_card(ctx: Context, lead: Lead, match: Match) -> CardModel:
    """检测到相似客户：张伟 | 深圳示例科技 | 138****5678, with link / create anyway."""
    found = await load_match(ctx.session, match)
    assert found is not None
    owner_id = found.owner_id if isinstance(found, Customer) else found.assignee_id
    owner = await ctx.session.get(Member, owner_id) if owner_id else None
    kind = T_KIND_CUSTOMER if isinstance(found, Customer) else T_KIND_LEAD
    return CardModel(
        title=T_SIMILAR_TITLE, kind="similar", object_id=lead.id,
        description=T_SIMILAR.format(contact=found.contact, company=found.company,
                                     phone=mask_phone(found.phone or _landline(found))),
        fields=[CardField(T_SIMILAR_WHICH, f"{kind} #{found.id}"),
                CardField(T_SIMILAR_OWNER, owner.name if owner else T_NO_OWNER),
                CardField(T_SIMILAR_SAME, same_fields(match.reasons)),
                CardField(T_SIMILAR_NEW, f"{lead.company} · {lead.contact} · "
                                         f"{mask_phone(lead.phone)}")],
        buttons=[Button(T_LINK_BUTTON, f"link:{lead.id}", "primary"),
                 Button(T_CREATE_BUTTON, f"create:{lead.id}")],
    )


def same_fields(reasons: list[str]) -> str:
    """"电话、公司名称"; a strong match says so alone."""
    if "strong" in reasons:
        return REASON_NAMES["strong"]
    return "、".join(REASON_NAMES[r] for r in reasons if r in REASON_NAMES)


def _landline(record: Lead | Customer) -> str | None:
    return record.landline if isinstance(record, Lead) else None


async def link_draft(ctx: Context, object_id: str) -> None:
    """link: the typed lead is the record the card showed; the draft goes, nothing new
    is stored, and the rep hears whose it is."""
    card = await ctx.clicked_card()
    lead = await _my_draft(ctx, object_id, closed=card is not None and card.state == "closed",
                           stale=T_SIMILAR_STALE)
    if lead is None:
        return
    [check] = await check_door(ctx.session, [lead_keys(lead)], exclude=[("lead", lead.id)])
    found = await load_match(ctx.session, check.matches[0]) if check.matches else None
    if found is None:
        await _close_similar(ctx, lead, T_GONE_STATUS)
        await ctx.reply(T_SIMILAR_GONE.format(id=lead.id))
        await _carry_on(ctx, lead)
        return
    owner_id = found.owner_id if isinstance(found, Customer) else found.assignee_id
    owner = await ctx.session.get(Member, owner_id) if owner_id else None
    kind = T_KIND_CUSTOMER if isinstance(found, Customer) else T_KIND_LEAD
    ctx.audit("lead.link", "lead", lead.id,
              {"company": lead.company, "contact": lead.contact, "phone": lead.phone},
              {"linked_to": f"{'customer' if isinstance(found, Customer) else 'lead'}:"
                            f"{found.id}"})
    # The customer came back: kept as an enquiry on the record, its owner told.
    data = LeadInput(company=lead.company, contact=lead.contact,
                     phone=lead.phone or lead.landline, industry=lead.industry,
                     urgency=lead.urgency, source=lead.source, email=lead.email, note=lead.note)
    await record_enquiry(ctx.session, ctx.rt, data,
                         "customer" if isinstance(found, Customer) else "lead", found.id,
                         ctx.now, origin="chat", told=ctx.member)
    await _close_similar(ctx, lead, T_LINKED_STATUS.format(kind=kind, id=found.id))
    await ctx.clear_expectation("tags", lead.id)
    await ctx.session.execute(delete(LeadStatusChange).where(LeadStatusChange.lead_id == lead.id))
    await ctx.session.delete(lead)
    await ctx.reply(T_LINKED_REPLY.format(
        kind=kind, id=found.id, company=found.company, contact=found.contact,
        phone=mask_phone(found.phone or _landline(found)),
        owner=owner.name if owner else T_NO_OWNER))


async def create_anyway(ctx: Context, object_id: str) -> None:
    """create: the rep says the typed lead is someone else; it goes on as any new lead."""
    card = await ctx.clicked_card()
    lead = await _my_draft(ctx, object_id, closed=card is not None and card.state == "closed",
                           stale=T_SIMILAR_STALE)
    if lead is None:
        return
    ctx.audit("lead.create_anyway", "lead", lead.id, None, {"company": lead.company})
    await _close_similar(ctx, lead, T_CREATED_STATUS)
    await _carry_on(ctx, lead)


async def _carry_on(ctx: Context, lead: Lead) -> None:
    if missing_tags(lead):
        await _ask(ctx, lead)
        return
    await publish_draft(ctx.session, ctx.rt, lead, ctx.now, creator=ctx.member)
    await _announce(ctx, lead)


async def _close_similar(ctx: Context, lead: Lead, status: str) -> None:
    for card in await open_cards(ctx.session, "similar", lead.id, ctx.member.id):
        await update_card(ctx.session, ctx.rt, card, CardModel.from_json(card.body).closed(status))


async def _ask(ctx: Context, lead: Lead) -> None:
    await ctx.expect("tags", lead.id)
    await ctx.reply(tags_card(lead, ctx.rt))


async def _announce(ctx: Context, lead: Lead) -> None:
    if lead.status == "accepted" and lead.assignee_id == ctx.member.id:
        await ctx.reply(T_KEPT.format(id=lead.id, company=lead.company))
    elif lead.assignee_id is not None:
        rep = await ctx.session.get(Member, lead.assignee_id)
        await ctx.reply(T_ROUTED.format(id=lead.id, company=lead.company,
                                        rep=rep.name if rep else ""))
    else:
        await ctx.reply(T_QUEUED.format(id=lead.id, company=lead.company))


async def _my_draft(ctx: Context, object_id: str, closed: bool = False,
                    stale: str = T_STALE) -> Lead | None:
    """The draft whose tags the sender may fill, or None after a polite answer."""
    lead = await ctx.session.get(Lead, int(object_id)) if is_number(object_id) else None
    if lead is None:
        await ctx.reply(T_NO_LEAD.format(id=object_id))
        ctx.outcome = "no_lead"
        return None
    if lead.status != DRAFT or closed:
        await ctx.reply(stale.format(id=lead.id))
        ctx.outcome = "stale"
        return None
    if lead.created_by_id != ctx.member.id:
        await ctx.reply(T_NOT_YOURS.format(id=lead.id))
        ctx.outcome = "foreign"
        return None
    return lead


@router.action("tags")
async def tag_click(ctx: Context, object_id: str, option: str | None) -> None:
    card = await ctx.clicked_card()
    lead = await _my_draft(ctx, object_id, closed=card is not None and card.state == "closed")
    if lead is None:
        return
    name, _, value = (option or "").partition("=")
    choices = tag_choices(ctx.settings)
    if name not in missing_tags(lead) or canonical_tag(value, choices[name]) is None:
        # A button of a step already answered (the card had not been updated yet).
        await ctx.reply(T_STALE.format(id=lead.id))
        ctx.outcome = "stale"
        return
    await _fill(ctx, lead, name, value)


@router.reply("tags")
async def tag_reply(ctx: Context, text: str) -> None:
    pending = await ctx.session.get(PendingReply, ctx.member.id)
    lead = await _my_draft(ctx, str(pending.object_id if pending else 0))
    if lead is None:
        await ctx.clear_expectation()
        return
    name = missing_tags(lead)[0]
    values = tag_choices(ctx.settings)[name]
    value = canonical_tag(text, values)
    if value is None:
        await ctx.reply(T_BAD_CHOICE.format(text=text[:20], field=FIELD_NAMES[name],
                                            choices="、".join(values.values())))
        ctx.outcome = "bad_input"
        return
    await _fill(ctx, lead, name, value)


async def _fill(ctx: Context, lead: Lead, name: str, value: str) -> None:
    """Set one tag; the card asks for the next, or the lead starts once none is missing."""
    setattr(lead, name, value)
    lead.updated_at = ctx.now
    cards = await open_cards(ctx.session, "tags", lead.id, ctx.member.id)
    if missing_tags(lead):
        model = tags_card(lead, ctx.rt)
        for card in cards:
            await update_card(ctx.session, ctx.rt, card, model)
        if not cards:
            await _ask(ctx, lead)
        return
    done = T_DONE_STATUS.format(tags=_tag_labels(lead, ctx.settings))
    closed = CardModel(title=T_ASK_TITLE.format(id=lead.id), kind="tags", object_id=lead.id,
                       fields=lead_fields(lead, ctx.rt)).closed(done)
    for card in cards:
        await update_card(ctx.session, ctx.rt, card, closed)
    await ctx.clear_expectation("tags", lead.id)
    await publish_draft(ctx.session, ctx.rt, lead, ctx.now, creator=ctx.member)
    ctx.audit("lead.tags", "lead", lead.id, None,
              {"urgency": lead.urgency, "industry": lead.industry, "source": lead.source})
    await _announce(ctx, lead)

