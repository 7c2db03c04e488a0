"""The merge review in chat: /合并扫描, the monthly review job, the proposal cards and their
合并 / 不是重复 buttons, /拆分, /撤销合并, /重复率, and the team-channel notices.

Owns what the admins and the teams are told and when; the proposals, the merge, the
split and the undo themselves are handlers.merging's, finding the duplicates
handlers.matching's, and the comparison page bot.merge_pages'.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Context
from bot.merge_pages import PURPOSE, comparison_link
from bot.outbox import Markdown, enqueue, enqueue_teams, open_cards, update_card
from bot.router import Router, is_number
from bot.uploads import LIFETIMES
from cards.model import Button, CardField, CardModel
from handlers.assignment import active_admins
from handlers.matching import scan_groups
from handlers.merging import (
    MergeRefused,
    Record,
    ScanResult,
    active_count,
    claim_scan,
    duplicate_rate,
    finish_scan,
    insert_proposals,
    load_records,
    merge_proposal,
    percent,
    plan_scan,
    read_scan,
    remember_not_duplicate,
    review_period,
    running_scan,
    split_proposal,
    survivor_basis,
    undo_merge,
)
from handlers.phones import mask_phone
from storage.models import Card, Customer, Member, Merge, MergeProposal, MergeScan

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

router = Router("merging")

ADMINS = {"admin"}
KIND = "merge"
# Cards per admin per scan. A member may get 25 messages a minute on WeCom and 20 on
# DingTalk (our budgets): 15 cards, the summary and a progress line leave room for the
# admin's other messages in the same minute. The rest wait for the next /合并扫描.
CARDS_PER_SCAN = 15
REST_LISTED = 5  # proposals without a card named in the summary
WRITE_CHUNK = 1000  # new proposals a transaction
COMPANY_CHARS = 14
# A WeCom group robot's markdown takes 4,096 bytes: a notice names this many records.
NOTICE_RECORDS = 10
PROGRESS_FIRST_SECONDS = 10.0  # a scan this long tells the admin who asked how far it is
PROGRESS_EVERY_SECONDS = 30.0

T_SCAN_USAGE = "用法：/合并扫描"
T_SCAN_SUMMARY = "/合并扫描：立即扫描重复客户，发出合并建议"
T_SCAN_STARTED = "开始合并扫描：共 {active} 位活跃客户。扫描完成后把合并建议发给管理员。"
T_SCAN_RUNNING = "合并扫描已在进行中（{at} 开始），完成后结果会发给管理员，请稍候。"
T_PROGRESS = "合并扫描进行中：已比对 {done}/{total} 位客户，完成后发送合并建议。"
T_PROGRESS_START = "合并扫描进行中，完成后发送合并建议。"
T_SCAN_FAILED = "合并扫描出错，没有完成；错误已记入日志，请稍后再发送 /合并扫描。"
T_HEAD_MONTHLY = "【每月合并复核】"
T_HEAD_COMMAND = "【合并扫描】由 {name} 发起。"
T_DONE_NONE = "扫描完成（{when}）：{active} 位活跃客户中没有发现疑似重复。"
T_DONE = ("扫描完成（{when}）：{active} 位活跃客户中有 {grouped} 位疑似重复，共 {groups} 组，"
          "重复率 {rate}。")
T_CARDS_SENT = "上面是 {n} 张合并建议卡片，请逐张选择「合并」或「不是重复」。"
T_CARDS_BEFORE = "其中 {n} 组之前已发过卡片，请在原来的卡片上处理。"
T_CARDS_MORE = ("另有 {rest} 组还没有发卡片（每次最多 {cap} 张）：处理完上面的卡片后，"
                "发送 /合并扫描 获取下一批。")
T_MORE_LINE = "· 建议 #{id}：{company} 等 {n} 条"
T_MORE_ELSE = "· ……共 {n} 组"
T_REMEMBERED = "另有 {n} 组已标记为不是重复，本次没有再提出。"
T_SUPERSEDED = "{n} 条旧的合并建议因记录变化已失效。"

T_CARD_TITLE = "合并建议 #{id}：{n} 条记录"
T_CARD_DESC = "{reasons}相同，疑似同一客户：{ids}。"
# Three or more records are joined pair by pair: no field need agree across all of them.
T_CARD_DESC_CHAIN = "两两之间{reasons}相同（不一定每两条都相同），疑似同一客户：{ids}。"
# A group of three or more may be chained (a shared switchboard, an e-mail): say the way out.
T_CARD_SPLIT = "如有几条不是同一客户：/拆分 {id} 客户号"
SPLIT_HINT_FROM = 3
T_STRONG = "手机号、公司全称和联系人"
REASON_NAMES = {"phone": "手机号", "company": "公司名", "email": "邮箱"}
T_F_COMPANY, T_F_CONTACT, T_F_PHONE = "公司", "联系人", "电话"
T_F_OWNERS, T_F_SURVIVOR, T_F_COMPARE = "负责销售", "建议保留", "逐项对比"
T_SURVIVOR_VALUE = "#{id}（{basis}）"
T_BASIS = {"history": "历史记录最多", "activity": "最近有跟进", "oldest": "建档最早",
           "number": "编号最小"}
T_COMPARE_OPEN = "打开对比页"
T_NO_LINK = "未配置公网地址"
T_NONE = "未填"
T_NO_OWNER = "未分配"
T_MERGE, T_NOTDUP = "合并", "不是重复"

T_NO_PROPOSAL = "没有找到这条合并建议。"
T_NOT_ADMIN = "只有管理员可以确认合并，您的点击没有改变任何内容。"
T_STALE = "这张卡片已经失效：{what}。您的点击没有改变任何内容。"
T_STALE_MERGED = "这组客户已由 {name} 于 {at} 合并（合并 #{merge}）"
T_STALE_UNDONE = "这组客户的合并 #{merge} 已撤销；如仍是重复，下次扫描会再次提出"
T_STALE_NOTDUP = "{name} 已于 {at} 标记这组客户不是重复"
T_STALE_SPLIT = "{name} 已于 {at} 拆分了这组客户"
T_STALE_SUPERSEDED = "之后的扫描发现这组记录有变化，请以最新的合并建议为准"
T_STALE_RESENT = "这条建议已重新发送，请在最新的卡片上处理"
T_CHANGED = ("合并建议 #{id} 里的记录已有变化（有记录已被合并），这条建议已失效，"
             "下次扫描会重新比对。")
T_MERGED_STATUS = "{name} 已于 {at} 合并（合并 #{merge}）"
T_NOTDUP_STATUS = "{name} 已于 {at} 标记为不是重复"
T_SUPERSEDED_STATUS = "记录已变化，这条建议已失效"
T_RESENT_STATUS = "已重新发送，请在新卡片上处理"
T_MERGED = ("已合并（合并 #{merge}）：{n} 条记录合并为客户 #{survivor}（{company}），"
            "移入线索 {leads} 条、跟进 {follow_ups} 条，已通知相关销售。"
            "如有误，发送 /撤销合并 {merge} 恢复。")
T_NOTDUP_DONE = ("已记下：合并建议 #{id} 的 {n} 条记录不是同一客户，"
                 "以后的扫描不再提出这一组记录。")
T_NOTDUP_SPLIT = ("如其中几条确是同一客户，发送 /拆分 {id} 客户号 拆出不相干的记录，"
                  "仍然相符的会重新提出。")

T_NOTICE_HEAD = "**客户合并通知（合并 #{merge}）**"
T_NOTICE_BODY = "{admin} 把 {n} 条重复的客户记录合并为客户 #{survivor}："
T_NOTICE_LINE = "> #{id} {company} · {contact} · {phone}（{owner}）{mark}"
T_NOTICE_KEPT = "← 保留"
T_NOTICE_MORE = "> ……另有 {n} 条记录"
T_NOTICE_MOVED = "这些记录的线索和跟进已移到客户 #{survivor} 名下，负责销售：{owner}。"
T_NOTICE_UNDO = "如合并有误，管理员发送 /撤销合并 {merge} 即可恢复。"
T_UNDO_NOTICE_HEAD = "**客户合并已撤销（合并 #{merge}）**"
T_UNDO_NOTICE_BODY = ("{admin} 撤销了合并 #{merge}：客户 {ids} 已恢复为独立记录，"
                      "线索和跟进已移回原来的客户。")

T_SPLIT_USAGE = ("用法：/拆分 建议号 客户号 [客户号…]，例如：/拆分 3 14 15"
                 "（客户 #14、#15 与合并建议 #3 里其余的记录不是同一客户）")
T_SPLIT_SUMMARY = "/拆分 建议号 客户号…：把不是同一客户的记录从合并建议里拆出"
T_SPLIT_NO_PROPOSAL = "没有找到合并建议 #{id}。建议号见合并建议卡片的标题。"
T_SPLIT_STALE = "合并建议 #{id} 已不能拆分：{what}。没有改变任何内容。"
T_SPLIT_OUTSIDE = "客户 {ids} 不在合并建议 #{id} 里（它的记录：{members}），没有拆分。"
T_SPLIT_ALL = ("请只写要拆出的客户号：合并建议 #{id} 的其余记录至少要留一条"
               "（它的记录：{members}）。整组都不是同一客户，请点卡片上的「不是重复」。")
T_SPLIT_DONE = ("已拆分合并建议 #{id}：{split} 与 {rest} 不是同一客户，"
                "以后的扫描不会再把它们归为一组。")
T_SPLIT_NEW = "新的合并建议 #{id}：{ids}，卡片已发给管理员。"
T_SPLIT_OPEN = "{ids} 已在合并建议 #{id} 里，请在原来的卡片上处理。"
T_SPLIT_NOTHING = "拆分后没有仍然相符的记录，不再提出合并建议。"
T_SPLIT_STATUS = "{name} 已于 {at} 拆分（拆出 {ids}）"

T_UNDO_USAGE = "用法：/撤销合并 编号，例如：/撤销合并 3（编号见合并通知）"
T_UNDO_SUMMARY = "/撤销合并 编号：撤销一次客户合并"
T_NO_MERGE = "没有找到合并 #{id}。编号见合并通知，或合并后给您的回复。"
T_UNDONE_ALREADY = "合并 #{id} 已于 {at} 由 {name} 撤销，无需再次撤销。"
T_UNDO_LATER = "合并 #{id} 之后，其中的客户又参与了合并 #{later}，请先撤销合并 #{later}。"
T_UNDONE = ("已撤销合并 #{id}：客户 {ids} 已恢复，移回线索 {leads} 条、跟进 {follow_ups} 条，"
            "已通知相关销售。")
T_UNDONE_KEPT = "客户 #{survivor} 的{fields}在合并后又被修改过，保留了现在的值。"

T_RATE_USAGE = "用法：/重复率"
T_RATE_SUMMARY = "/重复率：疑似重复客户占活跃客户的比例，上次扫描和现在"
T_NO_SCAN = ("还没有做过合并扫描，暂无重复率。发送 /合并扫描 立即扫描，"
             "或等每月 5 日（遇节假日顺延到下一个工作日）10:00 的例行复核。")
T_RATE = ("重复率（疑似重复客户占活跃客户的比例）：\n"
          "上次扫描（{when}）：{before}（{b_part}/{b_all}）→ {label} {now}（{n_part}/{n_all}）")
T_RATE_AFTER, T_RATE_NOW = "合并后", "现在"
T_RATE_MERGED = "该次扫描的建议已合并 {n} 组。"

FIELD_LABELS = {"company": "公司", "contact": "联系人", "phone": "电话", "email": "邮箱",
                "industry": "行业", "owner_id": "负责销售"}


def _stamp(moment: datetime | None, rt: Runtime) -> str:
    return moment.astimezone(rt.settings.zone).strftime("%m-%d %H:%M") if moment else "-"


def stamp_day(moment: datetime | None, rt: Runtime) -> str:
    return moment.astimezone(rt.settings.zone).strftime("%Y-%m-%d") if moment else ""


def _clip(text: str, limit: int = COMPANY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display(name: str, value: Any, names: dict[int, str], rt: Runtime) -> str:
    """A customer field as a person reads it: phones masked, the owner by name, the
    industry by its label; "" when empty."""
    if value is None or value == "":
        return ""
    if name == "phone":
        return mask_phone(str(value))
    if name == "owner_id":
        return names.get(int(value), f"#{value}")
    if name == "industry":
        return rt.settings.leads.industries.get(str(value), str(value))
    return str(value)


def _distinct(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def reasons_text(reasons: Sequence[str]) -> str:
    if "strong" in reasons:
        return T_STRONG
    return "、".join(REASON_NAMES[r] for r in REASON_NAMES if r in reasons) or "多项信息"


async def member_names(session: AsyncSession, ids: Sequence[int | None]) -> dict[int, str]:
    wanted = sorted({int(i) for i in ids if i is not None})
    if not wanted:
        return {}
    rows = await session.execute(select(Member.id, Member.name).where(Member.id.in_(wanted)))
    return dict(rows.all())


def numbers(ids: Iterable[int]) -> str:
    """#8、#9: customer numbers as the cards and answers write them."""
    return "、".join(f"#{i}" for i in sorted(int(i) for i in ids))


def in_order(proposal: MergeProposal, records: dict[int, Record]) -> list[Record]:
    """The group's records, the proposed survivor first, then by number."""
    ids = sorted(int(i) for i in proposal.member_ids)
    return [records[i] for i in sorted(ids, key=lambda i: (i != proposal.survivor_id, i))
            if i in records]


# ---- the proposal card ---------------------------------------------------------------------


def proposal_card(
    proposal: MergeProposal, records: list[Record], names: dict[int, str], link: str | None,
    rt: Runtime,
) -> CardModel:
    values = proposal.values or {}
    survivor = next(r for r in records if r.id == proposal.survivor_id)

    def shown(field: str) -> str:
        return "、".join(_distinct([display(field, r.values.get(field), names, rt)
                                   for r in records]))

    companies = _distinct([str(r.values.get("company") or "") for r in records])
    company = str(values.get("company") or survivor.values.get("company") or "")
    if len(companies) > 1:
        company += " 等"
    basis = T_BASIS[survivor_basis(records, survivor.id)]
    fields = [
        CardField(T_F_COMPANY, company),
        CardField(T_F_CONTACT, shown("contact") or T_NONE),
        CardField(T_F_PHONE, shown("phone") or T_NONE),
        CardField(T_F_OWNERS, shown("owner_id") or T_NO_OWNER),
        CardField(T_F_SURVIVOR, T_SURVIVOR_VALUE.format(id=survivor.id, basis=basis)),
        CardField(T_F_COMPARE, T_COMPARE_OPEN, url=link) if link
        else CardField(T_F_COMPARE, T_NO_LINK),
    ]
    template = T_CARD_DESC if len(records) <= 2 else T_CARD_DESC_CHAIN
    description = template.format(reasons=reasons_text(proposal.reasons),
                                  ids=numbers(r.id for r in records))
    if len(records) >= SPLIT_HINT_FROM:
        description += "\n" + T_CARD_SPLIT.format(id=proposal.id)
    return CardModel(
        title=T_CARD_TITLE.format(id=proposal.id, n=len(records)), kind=KIND,
        object_id=proposal.id, fields=fields, description=description,
        buttons=[Button(T_MERGE, f"merge:{proposal.id}", "primary"),
                 Button(T_NOTDUP, f"notdup:{proposal.id}")],
    )


async def _close_cards(
    session: AsyncSession, rt: Runtime, proposal: MergeProposal, status: str
) -> None:
    """Every admin's copy of the proposal's card shows what became of it."""
    for card in await open_cards(session, KIND, proposal.id):
        await update_card(session, rt, card, CardModel.from_json(card.body).closed(status))


# ---- scanning: the command, the monthly job, the cards and the summary -------------------


class ScanProgress:
    """What scan_groups reports through `await progress(done, total)`."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.finished = asyncio.Event()

    async def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        # The matcher computes on the loop between reports: a turn for the progress line.
        await asyncio.sleep(0)


async def _report_progress(
    rt: Runtime, progress: ScanProgress, member_id: int, channel: str | None
) -> None:
    """Tell the admin who asked how far a long scan is, now and then, until it ends.

    Limitation: a matcher that computes on the event loop without awaiting leaves no
    turn for these lines; the admin still has the start message and the result.
    """
    wait = PROGRESS_FIRST_SECONDS
    while True:
        try:
            await asyncio.wait_for(progress.finished.wait(), wait)
            return
        except TimeoutError:
            pass
        async with rt.sessions() as session, session.begin():
            if progress.finished.is_set():
                return
            member = await session.get(Member, member_id)
            text = (T_PROGRESS.format(done=progress.done, total=progress.total)
                    if progress.total else T_PROGRESS_START)
            if member is not None:
                await enqueue(session, rt, member, text, channel=channel)
        rt.outbox.wake()
        wait = PROGRESS_EVERY_SECONDS


async def run_review(
    rt: Runtime, scan_id: int, *, requester_id: int | None = None, channel: str | None = None,
) -> ScanResult | None:
    """Scan, store the proposals and send every admin the cards and a summary."""
    progress = ScanProgress()
    watcher = None
    if requester_id is not None:
        watcher = rt.spawn(_report_progress(rt, progress, requester_id, channel),
                           name=f"merge-scan-progress-{scan_id}")
    try:
        # A read-only snapshot: on SQLite the bot goes on recording callbacks meanwhile.
        async with rt.sessions.reading() as session:
            try:
                found = await read_scan(session, await scan_groups(session, progress=progress))
            finally:
                progress.finished.set()
    except Exception:
        log.exception("merge scan %s failed", scan_id)
        await _scan_failed(rt, scan_id, requester_id, channel)
        return None
    finally:
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
    plan = plan_scan(found, scan_id, rt.now())
    # New proposals in short transactions: on SQLite the bot's writes go in between.
    for start in range(0, len(plan.new), WRITE_CHUNK):
        async with rt.sessions() as session, session.begin():
            await insert_proposals(session, plan.new[start:start + WRITE_CHUNK])
    async with rt.sessions() as session, session.begin():
        scan = await session.get(MergeScan, scan_id)
        assert scan is not None
        result = await finish_scan(session, scan, plan, found, rt.now())
        for proposal in result.superseded:
            await _close_cards(session, rt, proposal, T_SUPERSEDED_STATUS)
        await _send_review(session, rt, result, requester_id, channel)
    rt.outbox.wake()
    log.info("merge scan %s: %d active, %d groups, %d new proposals", scan_id, found.active,
             len(result.open), result.new)
    return result


async def _scan_failed(
    rt: Runtime, scan_id: int, requester_id: int | None, channel: str | None
) -> None:
    async with rt.sessions() as session, session.begin():
        scan = await session.get(MergeScan, scan_id)
        if scan is not None:
            # A failed monthly review frees its month: the next day's check tries again.
            scan.state, scan.period, scan.finished_at = "failed", None, rt.now()
        member = await session.get(Member, requester_id) if requester_id else None
        if member is not None:
            await enqueue(session, rt, member, T_SCAN_FAILED, channel=channel)
    rt.outbox.wake()


async def _carded(
    session: AsyncSession, proposal_ids: list[int], since: datetime
) -> set[tuple[int, int]]:
    """(proposal, admin) pairs with a card that still has buttons and a working
    comparison link (sent since `since`); an older card is sent again."""
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(proposal_ids), 500):
        rows = await session.execute(
            select(Card.object_id, Card.member_id)
            .where(Card.kind == KIND, Card.state == "open", Card.created_at > since,
                   Card.object_id.in_(proposal_ids[start:start + 500])))
        pairs.update((int(p), int(m)) for p, m in rows.all())
    return pairs


async def _send_cards(
    session: AsyncSession, rt: Runtime, admin: Member, proposals: Sequence[MergeProposal],
    records: dict[int, Record], names: dict[int, str], channel: str | None,
) -> None:
    """The admin's card for each proposal, with a fresh comparison link; an older card of
    the admin's for the same proposal says it was sent again."""
    for proposal in proposals:
        for old in await open_cards(session, KIND, proposal.id, admin.id):
            await update_card(session, rt, old, CardModel.from_json(old.body).closed(
                T_RESENT_STATUS))
        link = await comparison_link(session, rt, admin, proposal.id)
        card = proposal_card(proposal, in_order(proposal, records), names, link, rt)
        await enqueue(session, rt, admin, card, channel=channel)


async def _send_review(
    session: AsyncSession, rt: Runtime, result: ScanResult, requester_id: int | None,
    channel: str | None,
) -> None:
    admins = await active_admins(session)
    carded = await _carded(session, [p.id for p in result.open],
                           rt.now() - LIFETIMES[PURPOSE])
    todo = {a.id: [p for p in result.open if (p.id, a.id) not in carded] for a in admins}
    to_card = {p.id: p for lists in todo.values() for p in lists[:CARDS_PER_SCAN]}
    records = await load_records(
        session, [int(i) for p in to_card.values() for i in p.member_ids])
    names = await member_names(session, [r.values.get("owner_id") for r in records.values()])
    requester = next((a for a in admins if a.id == requester_id), None)
    for admin in admins:
        prefer = channel if admin.id == requester_id else None
        mine = todo[admin.id]
        await _send_cards(session, rt, admin, mine[:CARDS_PER_SCAN], records, names, prefer)
        summary = _summary(rt, result, sent=len(mine[:CARDS_PER_SCAN]),
                           before=len(result.open) - len(mine), rest=mine[CARDS_PER_SCAN:],
                           requester=requester)
        await enqueue(session, rt, admin, summary, channel=prefer)


def _summary(
    rt: Runtime, result: ScanResult, *, sent: int, before: int, rest: list[MergeProposal],
    requester: Member | None,
) -> str:
    scan = result.scan
    head = (T_HEAD_MONTHLY if scan.trigger == "monthly"
            else T_HEAD_COMMAND.format(name=requester.name if requester else "管理员"))
    when = _stamp(scan.finished_at, rt)
    if not result.open:
        lines = [head + T_DONE_NONE.format(when=when, active=scan.active)]
    else:
        lines = [head + T_DONE.format(when=when, active=scan.active, grouped=scan.grouped,
                                      groups=len(result.open),
                                      rate=percent(scan.grouped, scan.active))]
    if sent:
        lines.append(T_CARDS_SENT.format(n=sent))
    if before:
        lines.append(T_CARDS_BEFORE.format(n=before))
    if rest:
        lines.append(T_CARDS_MORE.format(rest=len(rest), cap=CARDS_PER_SCAN))
        lines += [T_MORE_LINE.format(id=p.id, company=_clip(str(p.values.get("company") or "")),
                                     n=len(p.member_ids)) for p in rest[:REST_LISTED]]
        if len(rest) > REST_LISTED:
            lines.append(T_MORE_ELSE.format(n=len(rest)))
    if result.remembered:
        lines.append(T_REMEMBERED.format(n=result.remembered))
    if result.superseded:
        lines.append(T_SUPERSEDED.format(n=len(result.superseded)))
    return "\n".join(lines)


@router.command("合并扫描", roles=ADMINS, usage=T_SCAN_USAGE, summary=T_SCAN_SUMMARY)
async def scan_command(ctx: Context, args: str) -> None:
    scan = await claim_scan(ctx.session, ctx.now, trigger="command", actor=ctx.member)
    if scan is None:
        running = await running_scan(ctx.session, ctx.now)
        await ctx.reply(T_SCAN_RUNNING.format(at=_stamp(running.started_at if running
                                                         else ctx.now, ctx.rt)))
        ctx.outcome = "running"
        return
    await ctx.reply(T_SCAN_STARTED.format(active=await active_count(ctx.session)))
    scan_id, member_id, channel = scan.id, ctx.member.id, ctx.event.channel

    async def start(rt: Runtime) -> None:
        rt.spawn(run_review(rt, scan_id, requester_id=member_id, channel=channel),
                 name=f"merge-scan-{scan_id}")

    ctx.after_commit(start)


async def monthly_review(rt: Runtime) -> ScanResult | None:
    """The scheduled review: on the month's review day from 10:00 (and, when the bot was
    down then, on the first check after it), once a month, every admin told."""
    local = rt.now().astimezone(rt.settings.zone)
    period = review_period(local, rt.calendar_extra)
    if period is None:
        return None
    async with rt.sessions() as session, session.begin():
        scan = await claim_scan(session, rt.now(), trigger="monthly", period=period)
    if scan is None:
        return None
    log.info("monthly merge review for %s: scan %s", period, scan.id)
    return await run_review(rt, scan.id)


# ---- the buttons --------------------------------------------------------------------------


async def _clicked_proposal(ctx: Context, object_id: str) -> MergeProposal | None:
    """The open proposal an admin tapped, or None after a polite answer."""
    card = await ctx.clicked_card()
    proposal = (await ctx.session.get(MergeProposal, int(object_id))
                if is_number(object_id) else None)
    if proposal is None:
        await ctx.reply(T_NO_PROPOSAL)
        ctx.outcome = "no_proposal"
        return None
    if ctx.member.role != "admin":
        await ctx.reply(T_NOT_ADMIN)
        ctx.outcome = "foreign"
        return None
    if proposal.state != "proposed" or (card is not None and card.state == "closed"):
        await ctx.reply(await _stale_text(ctx, proposal))
        ctx.outcome = "stale"
        return None
    return proposal


async def _stale_text(ctx: Context, proposal: MergeProposal) -> str:
    return T_STALE.format(what=await _what_became(ctx, proposal))


async def _what_became(ctx: Context, proposal: MergeProposal) -> str:
    """What became of a proposal no longer open to this click or command."""
    decider = (await ctx.session.get(Member, proposal.decided_by_id)
               if proposal.decided_by_id else None)
    name, at = (decider.name if decider else "-"), _stamp(proposal.decided_at, ctx.rt)
    merge = await ctx.session.scalar(
        select(Merge).where(Merge.proposal_id == proposal.id).order_by(Merge.id.desc()))
    if proposal.state == "merged" and merge is not None:
        what = T_STALE_MERGED.format(name=name, at=at, merge=merge.id)
    elif proposal.state == "undone" and merge is not None:
        what = T_STALE_UNDONE.format(merge=merge.id)
    elif proposal.state == "notdup":
        what = T_STALE_NOTDUP.format(name=name, at=at)
    elif proposal.state == "split":
        what = T_STALE_SPLIT.format(name=name, at=at)
    elif proposal.state == "proposed":  # open, but this copy of its card was replaced
        what = T_STALE_RESENT
    else:
        what = T_STALE_SUPERSEDED
    return what


async def _refused(ctx: Context, proposal: MergeProposal, refused: MergeRefused) -> None:
    await ctx.session.refresh(proposal)
    ctx.outcome = "stale"
    if refused.reason == "changed" and proposal.state == "proposed":
        proposal.state, proposal.decided_at = "superseded", ctx.now
        await _close_cards(ctx.session, ctx.rt, proposal, T_SUPERSEDED_STATUS)
        await ctx.reply(T_CHANGED.format(id=proposal.id))
        return
    await ctx.reply(await _stale_text(ctx, proposal))


async def _decide(
    ctx: Context, object_id: str, decide: Callable[[MergeProposal], Awaitable[Any]]
) -> tuple[MergeProposal, Any] | None:
    """The tapped proposal and what `decide` made of it, or None after a polite answer
    (not an admin, decided already, records changed)."""
    proposal = await _clicked_proposal(ctx, object_id)
    if proposal is None:
        return None
    try:
        return proposal, await decide(proposal)
    except MergeRefused as refused:
        await _refused(ctx, proposal, refused)
        return None


@router.action("merge")
async def merge_clicked(ctx: Context, object_id: str, option: str | None) -> None:
    found = await _decide(ctx, object_id, lambda proposal: merge_proposal(
        ctx.session, proposal, ctx.member, ctx.now, lock=not ctx.rt.is_sqlite))
    if found is None:
        return
    proposal, merge = found
    await _close_cards(ctx.session, ctx.rt, proposal, T_MERGED_STATUS.format(
        name=ctx.member.name, at=_stamp(ctx.now, ctx.rt), merge=merge.id))
    survivor = await ctx.session.get(Customer, merge.survivor_id)
    assert survivor is not None
    await _announce_merge(ctx, merge, survivor)
    await ctx.reply(T_MERGED.format(
        merge=merge.id, n=len(merge.merged_ids) + 1, survivor=survivor.id,
        company=survivor.company, leads=len(merge.moved.get("leads", [])),
        follow_ups=len(merge.moved.get("follow_ups", []))))


@router.action("notdup")
async def notdup_clicked(ctx: Context, object_id: str, option: str | None) -> None:
    found = await _decide(ctx, object_id, lambda proposal: remember_not_duplicate(
        ctx.session, proposal, ctx.member, ctx.now))
    if found is None:
        return
    proposal, _ = found
    await _close_cards(ctx.session, ctx.rt, proposal, T_NOTDUP_STATUS.format(
        name=ctx.member.name, at=_stamp(ctx.now, ctx.rt)))
    text = T_NOTDUP_DONE.format(id=proposal.id, n=len(proposal.member_ids))
    if len(proposal.member_ids) >= SPLIT_HINT_FROM:
        text += "\n" + T_NOTDUP_SPLIT.format(id=proposal.id)
    await ctx.reply(text)


# ---- /拆分 -----------------------------------------------------------------------------------


def parse_split(args: str) -> tuple[int, list[int]] | None:
    """`3 14 15` (or #3 #14、#15, 客户#14) → (3, [14, 15]); None when it is not that."""
    words = [w for w in re.split(r"[\s,，、;；]+", args.strip()) if w]
    numbers = [w.removeprefix("客户").lstrip("#") for w in words]
    if len(numbers) < 2 or not all(is_number(n) for n in numbers):
        return None
    return int(numbers[0]), [int(n) for n in numbers[1:]]


@router.command("拆分", roles=ADMINS, usage=T_SPLIT_USAGE, summary=T_SPLIT_SUMMARY)
async def split_command(ctx: Context, args: str) -> None:
    parsed = parse_split(args)
    if parsed is None:
        await ctx.reply(T_SPLIT_USAGE)
        return
    proposal_id, named = parsed
    proposal = await ctx.session.get(MergeProposal, proposal_id)
    if proposal is None:
        await ctx.reply(T_SPLIT_NO_PROPOSAL.format(id=proposal_id))
        ctx.outcome = "no_proposal"
        return
    members = numbers(proposal.member_ids)
    try:
        done = await split_proposal(ctx.session, proposal, named, ctx.member, ctx.now)
    except MergeRefused as refused:
        ctx.outcome = "refused"
        if refused.reason == "outside":
            await ctx.reply(T_SPLIT_OUTSIDE.format(ids=numbers(refused.detail),
                                                   id=proposal.id, members=members))
        elif refused.reason == "all":
            await ctx.reply(T_SPLIT_ALL.format(id=proposal.id, members=members))
        else:
            await ctx.session.refresh(proposal)
            await ctx.reply(T_SPLIT_STALE.format(id=proposal.id,
                                                 what=await _what_became(ctx, proposal)))
        return
    await _close_cards(ctx.session, ctx.rt, proposal, T_SPLIT_STATUS.format(
        name=ctx.member.name, at=_stamp(ctx.now, ctx.rt), ids=numbers(done.split)))
    lines = [T_SPLIT_DONE.format(id=proposal.id, split=numbers(done.split),
                                 rest=numbers(done.rest))]
    lines += [T_SPLIT_NEW.format(id=p.id, ids=numbers(p.member_ids)) for p in done.new]
    lines += [T_SPLIT_OPEN.format(id=p.id, ids=numbers(p.member_ids)) for p in done.open]
    if not done.new and not done.open:
        lines.append(T_SPLIT_NOTHING)
    await ctx.reply("\n".join(lines))
    await _card_split_off(ctx, done.new)


async def _card_split_off(ctx: Context, proposals: Sequence[MergeProposal]) -> None:
    """The split's new proposals, carded to every admin as a scan cards them."""
    if not proposals:
        return
    records = await load_records(ctx.session, [int(i) for p in proposals for i in p.member_ids])
    names = await member_names(ctx.session, [r.values.get("owner_id") for r in records.values()])
    for admin in await active_admins(ctx.session):
        prefer = ctx.event.channel if admin.id == ctx.member.id else None
        await _send_cards(ctx.session, ctx.rt, admin, proposals, records, names, prefer)


# ---- the team-channel notices -------------------------------------------------------------


async def tell_owners(
    session: AsyncSession, rt: Runtime, owner_ids: Sequence[int | None], text: str
) -> None:
    """The notice in each owner's team channel, @-mentioning the team's owners; owners
    whose team has no channel on any platform get it one to one."""
    wanted = sorted({int(i) for i in owner_ids if i is not None})
    owners = list((await session.scalars(
        select(Member).where(Member.id.in_(wanted), Member.status != "left")
        .order_by(Member.id))).all()) if wanted else []
    by_team: dict[str | None, list[Member]] = {}
    for owner in owners:
        by_team.setdefault(owner.team or None, []).append(owner)
    platforms = [rt.channels[n] for n in (rt.platforms_enabled or ["console"])]
    with_channel = {team: people for team, people in by_team.items()
                    if any(c.group_address(team) is not None for c in platforms)}
    await enqueue_teams(session, rt, with_channel, text)
    for team, people in by_team.items():
        if team not in with_channel:
            for owner in people:
                await enqueue(session, rt, owner, Markdown(text))


async def _announce_merge(ctx: Context, merge: Merge, survivor: Customer) -> None:
    """Before the merge, as the reps knew them: the merged-away values and the survivor's
    own values (before any field was filled)."""
    survivor_was = {"company": survivor.company, "contact": survivor.contact,
                    "phone": survivor.phone, "owner_id": survivor.owner_id,
                    **merge.survivor_before}
    rows = [(survivor.id, survivor_was)] + [
        (int(i), values) for i, values in sorted(merge.merged_before.items(),
                                                 key=lambda kv: int(kv[0]))]
    owner_ids = [values.get("owner_id") for _, values in rows]
    names = await member_names(ctx.session, [*owner_ids, survivor.owner_id])
    lines = [T_NOTICE_HEAD.format(merge=merge.id),
             T_NOTICE_BODY.format(admin=ctx.member.name, n=len(rows), survivor=survivor.id)]
    for customer_id, values in rows[:NOTICE_RECORDS]:
        lines.append(T_NOTICE_LINE.format(
            id=customer_id, company=values.get("company") or T_NONE,
            contact=values.get("contact") or T_NONE,
            phone=mask_phone(values.get("phone")) or T_NONE,
            owner=names.get(values.get("owner_id") or 0, T_NO_OWNER),
            mark=T_NOTICE_KEPT if customer_id == survivor.id else ""))
    if len(rows) > NOTICE_RECORDS:
        lines.append(T_NOTICE_MORE.format(n=len(rows) - NOTICE_RECORDS))
    lines.append(T_NOTICE_MOVED.format(survivor=survivor.id,
                                       owner=names.get(survivor.owner_id or 0, T_NO_OWNER)))
    lines.append(T_NOTICE_UNDO.format(merge=merge.id))
    await tell_owners(ctx.session, ctx.rt, owner_ids, "\n".join(lines))


# ---- /撤销合并 and /重复率 ----------------------------------------------------------------


@router.command("撤销合并", roles=ADMINS, usage=T_UNDO_USAGE, summary=T_UNDO_SUMMARY)
async def undo_command(ctx: Context, args: str) -> None:
    number = args.strip().lstrip("#")
    if not is_number(number):
        await ctx.reply(T_UNDO_USAGE)
        return
    merge = await ctx.session.get(Merge, int(number))
    if merge is None:
        await ctx.reply(T_NO_MERGE.format(id=int(number)))
        ctx.outcome = "no_merge"
        return
    try:
        kept = await undo_merge(ctx.session, merge, ctx.member, ctx.now,
                                lock=not ctx.rt.is_sqlite)
    except MergeRefused as refused:
        ctx.outcome = "refused"
        if refused.reason == "later":
            await ctx.reply(T_UNDO_LATER.format(id=merge.id, later=refused.detail.id))
            return
        await ctx.session.refresh(merge)
        undoer = (await ctx.session.get(Member, merge.undone_by_id)
                  if merge.undone_by_id else None)
        await ctx.reply(T_UNDONE_ALREADY.format(id=merge.id, at=_stamp(merge.undone_at, ctx.rt),
                                                name=undoer.name if undoer else "-"))
        return
    ids = "、".join(f"#{i}" for i in merge.merged_ids)
    owners = [v.get("owner_id") for v in merge.merged_before.values()]
    survivor = await ctx.session.get(Customer, merge.survivor_id)
    owners.append(survivor.owner_id if survivor else None)
    await tell_owners(ctx.session, ctx.rt, owners, "\n".join([
        T_UNDO_NOTICE_HEAD.format(merge=merge.id),
        T_UNDO_NOTICE_BODY.format(admin=ctx.member.name, merge=merge.id, ids=ids)]))
    text = T_UNDONE.format(id=merge.id, ids=ids, leads=len(merge.moved.get("leads", [])),
                           follow_ups=len(merge.moved.get("follow_ups", [])))
    if kept:
        text += "\n" + T_UNDONE_KEPT.format(
            survivor=merge.survivor_id, fields="、".join(FIELD_LABELS[k] for k in kept))
    await ctx.reply(text)


@router.command("重复率", roles=ADMINS, usage=T_RATE_USAGE, summary=T_RATE_SUMMARY)
async def rate_command(ctx: Context, args: str) -> None:
    rate = await duplicate_rate(ctx.session)
    if rate is None:
        await ctx.reply(T_NO_SCAN)
        return
    (b_part, b_all), (n_part, n_all) = rate.before, rate.now
    text = T_RATE.format(
        when=_stamp(rate.scan.finished_at, ctx.rt), before=percent(b_part, b_all),
        b_part=b_part, b_all=b_all, label=T_RATE_AFTER if rate.merged_since else T_RATE_NOW,
        now=percent(n_part, n_all), n_part=n_part, n_all=n_all)
    if rate.merged_since:
        text += "\n" + T_RATE_MERGED.format(n=rate.merged_since)
    await ctx.reply(text)
