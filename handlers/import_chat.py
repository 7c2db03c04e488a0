"""Spreadsheet import from the chat: /导入, /导入模板, a file sent on DingTalk, the result
card and its import / cancel buttons. Checking and writing are handlers.lead_import's.

Slow work (downloading, checking, writing) runs in background tasks started after the
event's transaction commits; progress and results reach the member through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from bot import uploads
from bot.context import Context
from bot.outbox import enqueue, open_cards, update_card
from bot.router import ROLE_NAMES, Router
from cards.model import Button, CardField, CardModel
from handlers import import_worker
from handlers.tabular import TableError
from storage.models import Card, Lead, LeadImport, Member

if TYPE_CHECKING:
    from types import ModuleType

    from bot.runtime import Runtime
    from handlers.lead_import import ImportReport

log = logging.getLogger(__name__)

router = Router("import")

IMPORT_ROLES = frozenset({"rep", "marketing", "admin"})
# Progress in the chat: one message each time this many more rows are done.
PROGRESS_STEP = 5000
PROBLEMS_SHOWN = 4
CARD_KIND = "import"

# The fields as the template's header names them (the reasons say "第5行 手机号：…").
FIELD_NAMES = {
    "company": "公司名称", "contact": "联系人", "phone": "手机号", "landline": "座机",
    "email": "邮箱", "industry": "行业", "urgency": "紧急程度", "source": "来源渠道",
    "note": "备注", "owner": "负责人", "first_contact": "首次联系", "employees": "员工数",
    "external_id": "外部编号",
}

T_IMPORT_USAGE = "/导入"
T_IMPORT_SUMMARY = "/导入 /导入模板：用表格批量导入线索，下载导入模板"
T_SEND_FILE = ("请直接把 xlsx 或 csv 文件发给我（不超过 {mb} MB），我检查后发您结果卡片，"
               "确认后才会导入。需要模板请发送 /导入模板。")
T_UPLOAD_LINK = ("请在 {minutes} 分钟内打开下面的链接，上传 xlsx 或 csv 文件（不超过 {mb} MB）：\n"
                 "{url}\n检查结果会发到这里，确认后才会导入。需要模板请发送 /导入模板。")
T_TEMPLATE_LINK = "导入模板（xlsx，{hours} 小时内有效）：\n{url}\n第一行是列名，请保留。"
T_NO_PUBLIC_URL_ADMIN = ("无法生成链接：还没有设置 SALESBOT_HTTP__PUBLIC_URL（手机和企业微信"
                         "能访问到的机器人地址，例如 https://crm.example.com）。"
                         "设置后重启机器人即可。")
T_NO_PUBLIC_URL = ("无法生成链接：机器人还没有配置对外地址。"
                   "请联系管理员{admins}设置 SALESBOT_HTTP__PUBLIC_URL。")
T_FILE_NOT_ALLOWED = "导入线索只对{roles}开放。"
T_FILE_UNSUPPORTED = "暂时无法接收这个渠道的文件。"
T_RECEIVED = "已收到「{name}」，正在检查，请稍候……"
T_TOO_LARGE = "「{name}」超过 {mb} MB，无法导入。请拆分成几个文件分别发送。"
T_DOWNLOAD_FAILED = "下载「{name}」失败了，请稍后重新发送。"
T_UNREADABLE = "无法导入「{name}」：{reason}"
T_CHECK_FAILED = "检查「{name}」时出错了，请稍后再试；错误已记入日志。"
T_CHECK_PROGRESS = "已检查 {done}/{total} 行"
T_WRITE_PROGRESS = "已写入 {done}/{total} 行"

T_CARD_TITLE = "导入检查：{name}"
T_ACCEPTED = "可导入"
T_REJECTED = "有问题"
T_DUPLICATES = "重复"
T_WARNINGS = "提醒"
T_DETAILS = "问题明细"
T_DOWNLOAD = "下载 xlsx"
T_ROWS = "{n} 行"
T_ITEMS = "{n} 条"
T_ROW_PROBLEM = "第{row}行 {field}：{reason}"
T_ROW_PROBLEM_BARE = "第{row}行：{reason}"
T_DUP = {
    "in_file": "第{row}行 与第{of}行重复",
    "lead": "第{row}行 与已有线索 #{of} 重复",
    "customer": "第{row}行 与已有客户 #{of} 重复",
    "external_id": "第{row}行 外部编号已导入过（线索 #{of}）",
}
T_WARNING = "第{row}行 {field}：{message}（仅提醒）"
T_WARNING_BARE = "第{row}行：{message}（仅提醒）"
T_MORE = "……另有 {n} 条，见问题明细"
T_MORE_NO_LINK = "……另有 {n} 条（设置 SALESBOT_HTTP__PUBLIC_URL 后可下载问题明细）"
T_ALL_VALID = "所有行都可以导入。"
T_BUTTON_IMPORT = "导入有效的 {n} 行"
T_BUTTON_CANCEL = "取消"
T_NOTHING = "没有可以导入的行，请修改文件后重新发送"

T_PUBLISHING = "开始导入 {n} 行，完成后通知您。"
T_PUBLISHING_ROWS = "开始导入有效的行，完成后通知您。"
T_DONE = "导入完成：写入 {n} 条，{where}。"
T_LATE = ("另有 {n} 行在检查之后已有人录入为线索（比如同一文件的另一次导入），"
          "算作重复，没有再写入。")
T_ALL_LATE = ("导入完成：没有写入新线索。有效的 {n} 行在检查之后已有人录入为线索"
              "（比如同一文件的另一次导入），都算作重复。")
T_ALL_LATE_STATUS = "{name} 已于 {at} 确认导入，均已重复，未写入"
T_ASSIGNED_TO = "已分配给 {names}"
T_ASSIGNED_ONE = "{name} {n} 条"
T_QUEUED = "{n} 条在待分配队列"
T_NOBODY = "暂无人可分配"
T_DONE_STATUS = "{name} 已于 {at} 导入 {n} 条"
T_RESUMED = "导入「{name}」曾因服务中断停在分配这一步，现已自动完成：写入 {n} 条，{where}。"
T_RESUMED_STATUS = "已于 {at} 自动完成导入 {n} 条（服务中断后继续）"
T_PUBLISH_FAILED = "导入失败了，没有写入任何线索：{reason}。请稍后重试或联系管理员。"
T_FAILED_STATUS = "导入失败，未写入"
T_CANCELLED = "已取消导入「{name}」，没有写入任何线索。"
T_CANCELLED_STATUS = "{name} 已于 {at} 取消"
T_EXPIRED_STATUS = "{hours} 小时内没有确认，已于 {at} 自动取消"
T_CHECK_INTERRUPTED = "检查「{name}」时服务中断了，没有导入任何线索。请重新发送文件。"
T_NO_IMPORT = "没有找到这次导入（#{id}）。"
T_NOT_YOURS = "这次导入是 {name} 发起的，只有本人或管理员可以操作。"
T_BUSY = "这次导入正在进行，请稍候。"
T_STALE = {
    "published": "这次导入已经完成，无需再操作。",
    "cancelled": "这次导入已经取消。需要的话请重新发送文件。",
    "failed": "这次导入没有成功，请重新发送文件。",
    "checking": "文件还在检查中，请稍候。",
}
T_STALE_OTHER = "这张卡片已经失效。"

# Imports this process is writing or cancelling: a second click waits for the first.
# Limitation: per process; on several processes the core's own idempotency decides.
_running: set[int] = set()
# A published import whose card is still open this long after it finished was finished
# by a worker whose server was gone: the sweep closes the card and says where they went.
FINISH_GRACE = timedelta(minutes=2)


def _core() -> ModuleType:
    """The import core (handlers.lead_import), imported when first used: the commands
    and the card load without it."""
    from handlers import lead_import

    return lead_import


# ---- commands ---------------------------------------------------------------------------


async def _admins(ctx: Context) -> str:
    names = (await ctx.session.scalars(
        select(Member.name).where(Member.role == "admin", Member.status != "left")
        .order_by(Member.id).limit(3))).all()
    return f"（{'、'.join(names)}）" if names else ""


async def _no_public_url(ctx: Context) -> None:
    if ctx.member.role == "admin":
        await ctx.reply(T_NO_PUBLIC_URL_ADMIN)
    else:
        await ctx.reply(T_NO_PUBLIC_URL.format(admins=await _admins(ctx)))
    ctx.outcome = "no_public_url"


@router.command("导入", roles=IMPORT_ROLES, usage=T_IMPORT_USAGE, summary=T_IMPORT_SUMMARY)
async def import_command(ctx: Context, args: str) -> None:
    mb = uploads.MAX_UPLOAD_BYTES // (1024 * 1024)
    if ctx.event.channel == "dingtalk":
        # DingTalk robots receive files (a WeCom app chat does not: there, an upload page).
        await ctx.reply(T_SEND_FILE.format(mb=mb))
        return
    url = await uploads.upload_link(ctx.session, ctx.rt, ctx.member, ctx.event.channel)
    if url is None:
        await _no_public_url(ctx)
        return
    minutes = int(uploads.LIFETIMES["upload"].total_seconds() // 60)
    await ctx.reply(T_UPLOAD_LINK.format(minutes=minutes, mb=mb, url=url))


@router.command("导入模板", roles=IMPORT_ROLES, usage="/导入模板", summary="")
async def template_command(ctx: Context, args: str) -> None:
    url = await uploads.template_link(ctx.session, ctx.rt, ctx.member)
    if url is None:
        await _no_public_url(ctx)
        return
    hours = int(uploads.LIFETIMES["template"].total_seconds() // 3600)
    await ctx.reply(T_TEMPLATE_LINK.format(hours=hours, url=url))


@router.on("file")
async def file_received(ctx: Context) -> None:
    """A file sent to the robot (DingTalk): downloaded and checked in the background."""
    if ctx.member.role not in IMPORT_ROLES:
        roles = "、".join(ROLE_NAMES[r] for r in ROLE_NAMES if r in IMPORT_ROLES)
        await ctx.reply(T_FILE_NOT_ALLOWED.format(roles=roles))
        ctx.outcome = "not_allowed"
        return
    channel = ctx.rt.channels.get(ctx.event.channel)
    if not ctx.event.media_id or not hasattr(channel, "download_file"):
        await ctx.reply(T_FILE_UNSUPPORTED)
        ctx.outcome = "unsupported"
        return
    name = str(ctx.event.extra.get("file_name") or "file")
    await ctx.reply(T_RECEIVED.format(name=name))
    member_id, code, where = ctx.member.id, ctx.event.media_id, ctx.event.channel
    ctx.after_commit(_later(f"import-download-{member_id}",
                            lambda rt: _download_and_check(rt, member_id, code, name, where)))


def _later(
    name: str, work: Callable[[Runtime], Awaitable[Any]]
) -> Callable[[Runtime], Awaitable[None]]:
    """An after-commit hook that starts `work` as a tracked background task: the inbox
    worker goes on with the next event meanwhile."""
    async def hook(rt: Runtime) -> None:
        rt.spawn(work(rt), name=name)
    return hook


# ---- checking -----------------------------------------------------------------------------


@dataclass(slots=True)
class Checked:
    """What a check came to, for the upload page: a report, or the reason it was refused."""

    report: ImportReport | None = None
    error: str | None = None


async def _download_and_check(rt: Runtime, member_id: int, code: str, name: str,
                              channel_name: str) -> None:
    from bot.channels.dingtalk import DingTalkUnavailable, FileTooLarge

    channel: Any = rt.channels[channel_name]
    try:
        data = await channel.download_file(code, limit=uploads.MAX_UPLOAD_BYTES)
    except FileTooLarge:
        await tell(rt, member_id, channel_name,
                   T_TOO_LARGE.format(name=name, mb=uploads.MAX_UPLOAD_BYTES // (1024 * 1024)))
        return
    except DingTalkUnavailable as exc:
        log.warning("import file download failed: %s", exc.reason)
        await tell(rt, member_id, channel_name, T_DOWNLOAD_FAILED.format(name=name))
        return
    # Spooled while it waits its turn: a queue of checks holds no file in memory.
    path = await asyncio.to_thread(uploads.spool_bytes, data, name)
    del data
    await check_and_report(rt, member_id, path, name, channel_name)


async def check_and_report(rt: Runtime, member_id: int, source: bytes | Path, filename: str,
                           channel: str | None) -> Checked:
    """Check a file (its bytes, or a spooled file the worker deletes) with the core and
    send the member the result card."""
    core = _core()
    notes = import_worker.Notes(member_id, channel, T_CHECK_PROGRESS, PROGRESS_STEP)
    try:
        report = await import_worker.check(rt, source, filename, core.ImportOptions(),
                                           actor_id=member_id, origin="chat", notes=notes,
                                           channel=channel)
    except Exception as exc:
        await _discard(source)
        return await check_failed(rt, member_id, filename, channel, exc)
    await _discard(source)
    return await check_done(rt, member_id, report, filename, channel)


async def _discard(source: bytes | Path) -> None:
    """A spooled file the worker is done with (it deletes it itself once read)."""
    if isinstance(source, Path):
        await asyncio.to_thread(source.unlink, missing_ok=True)


async def check_failed(rt: Runtime, member_id: int, filename: str, channel: str | None,
                       exc: BaseException) -> Checked:
    """A file that could not be checked: the member hears why (the reason, when it is the
    file's fault)."""
    if isinstance(exc, _core().ImportError | TableError):
        await tell(rt, member_id, channel, T_UNREADABLE.format(name=filename, reason=exc))
        return Checked(error=str(exc))
    log.error("import check failed: %s", exc, exc_info=exc)
    await tell(rt, member_id, channel, T_CHECK_FAILED.format(name=filename))
    return Checked(error=T_CHECK_FAILED.format(name=filename))


async def check_done(rt: Runtime, member_id: int, report: ImportReport, filename: str,
                     channel: str | None) -> Checked:
    """The check's result card to the member; an import with nothing to confirm is
    closed at once, its problems still shown."""
    async with rt.sessions() as session:
        member = await session.get(Member, member_id)
    if member is None:
        return Checked(report=report)
    if report.import_id is not None and report.accepted == 0:
        try:
            await _core().cancel_import(rt, report.import_id, actor=member)
        except Exception:
            log.exception("import %s with no valid row could not be closed", report.import_id)
    async with rt.sessions() as session, session.begin():
        url = None
        if report.import_id is not None and (report.rejected or report.duplicates):
            url = await uploads.rejected_link(session, rt, member_id, report.import_id)
        await enqueue(session, rt, member, result_card(report, filename, url),
                      channel=channel)
    _wake(rt)
    return Checked(report=report)


def _wake(rt: Runtime) -> None:
    """The outbox starts on what was queued (a runtime without one: the sweep in tests)."""
    outbox = getattr(rt, "outbox", None)
    if outbox is not None:
        outbox.wake()


async def tell(rt: Runtime, member_id: int, channel: str | None, text: str) -> None:
    """A message to the member from a background task (its own short transaction)."""
    async with rt.sessions() as session, session.begin():
        member = await session.get(Member, member_id)
        if member is not None:
            await enqueue(session, rt, member, text, channel=channel)
    _wake(rt)


class ProgressNotes:
    """The core's progress callback: a chat message each PROGRESS_STEP rows.

    The core may call it while holding its own database session, so the callback only
    queues the note; a separate task writes it to the outbox.
    """

    def __init__(self, rt: Runtime, member_id: int, channel: str | None, text: str) -> None:
        self.rt, self.member_id, self.channel, self.text = rt, member_id, channel, text
        self.step = max(1, PROGRESS_STEP)
        self.next_at = self.step
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, done: int, total: int) -> None:
        # The last step is said by the summary or the card that follows.
        if done < self.next_at or done >= total:
            return
        self.next_at = (done // self.step + 1) * self.step
        if self._writer is None:
            self._writer = self.rt.spawn(self._write(), name=f"import-progress-{self.member_id}")
        self._queue.put_nowait(self.text.format(done=done, total=total))

    async def _write(self) -> None:
        while (text := await self._queue.get()) is not None:
            await tell(self.rt, self.member_id, self.channel, text)

    async def close(self) -> None:
        """Wait until every note is in the outbox, so they come before the result."""
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer


# ---- the card: pure ---------------------------------------------------------------------


def _rows(items: list[dict[str, Any]]) -> int:
    return len({item.get("row") for item in items})


def problem_lines(report: ImportReport) -> list[str]:
    """Every problem as the member reads it: rejections, then duplicates, then warnings."""
    lines = []
    for item in report.rejected:
        field = FIELD_NAMES.get(str(item.get("field") or ""), item.get("field") or "")
        template = T_ROW_PROBLEM if field else T_ROW_PROBLEM_BARE
        lines.append(template.format(row=item.get("row"), field=field, reason=item.get("reason")))
    for item in report.duplicates:
        template = T_DUP.get(str(item.get("kind")), T_DUP["in_file"])
        lines.append(template.format(row=item.get("row"), of=item.get("of")))
    for item in report.warnings:
        field = FIELD_NAMES.get(str(item.get("field") or ""), item.get("field") or "")
        template = T_WARNING if field else T_WARNING_BARE
        lines.append(template.format(row=item.get("row"), field=field,
                                     message=item.get("message")))
    return lines


def result_card(report: ImportReport, filename: str, rejected_url: str | None) -> CardModel:
    """The check's result: counts, the first problems, the download and the buttons."""
    import_id = report.import_id
    fields = [
        CardField(T_ACCEPTED, T_ROWS.format(n=report.accepted)),
        CardField(T_REJECTED, T_ROWS.format(n=_rows(report.rejected))),
        CardField(T_DUPLICATES, T_ROWS.format(n=len(report.duplicates))),
    ]
    if report.warnings:
        fields.append(CardField(T_WARNINGS, T_ITEMS.format(n=len(report.warnings))))
    if rejected_url:
        fields.append(CardField(T_DETAILS, T_DOWNLOAD, url=rejected_url))
    problems = problem_lines(report)
    shown = problems[:PROBLEMS_SHOWN]
    if len(problems) > len(shown):
        more = T_MORE if rejected_url else T_MORE_NO_LINK
        shown.append(more.format(n=len(problems) - len(shown)))
    card = CardModel(
        title=T_CARD_TITLE.format(name=filename), kind=CARD_KIND, object_id=import_id,
        description="\n".join(shown) if shown else T_ALL_VALID, fields=fields,
    )
    if import_id is None or report.accepted == 0:
        return card.closed(T_NOTHING)
    card.buttons = [
        Button(T_BUTTON_IMPORT.format(n=report.accepted), f"import:{import_id}", "primary"),
        Button(T_BUTTON_CANCEL, f"cancel:{import_id}"),
    ]
    return card


def where_they_went(assigned: list[tuple[str, int]], queued: int) -> str:
    """"已分配给 王芳 12 条、赵强 8 条，3 条在待分配队列" from the per-rep counts."""
    parts = []
    if assigned:
        names = "、".join(T_ASSIGNED_ONE.format(name=name, n=n) for name, n in assigned)
        parts.append(T_ASSIGNED_TO.format(names=names))
    if queued:
        parts.append(T_QUEUED.format(n=queued))
    return "，".join(parts) or T_NOBODY


# ---- the buttons --------------------------------------------------------------------------


def _stamp(rt: Runtime) -> str:
    return rt.now().astimezone(rt.settings.zone).strftime("%m-%d %H:%M")


async def _clickable(ctx: Context, object_id: str) -> LeadImport | None:
    """The import the click may act on, or None after a polite answer."""
    await ctx.clicked_card()  # keeps the click's WeCom ResponseCode for the final update
    imp = await ctx.session.get(LeadImport, int(object_id)) if object_id.isdigit() else None
    if imp is None:
        await ctx.reply(T_NO_IMPORT.format(id=object_id))
        ctx.outcome = "no_import"
        return None
    if imp.actor_id != ctx.member.id and ctx.member.role != "admin":
        owner = await ctx.session.get(Member, imp.actor_id) if imp.actor_id else None
        await ctx.reply(T_NOT_YOURS.format(name=owner.name if owner else "他人"))
        ctx.outcome = "foreign"
        return None
    if imp.id in _running or imp.state == "writing":
        await ctx.reply(T_BUSY)
        ctx.outcome = "busy"
        return None
    if imp.state != "checked":
        await ctx.reply(T_STALE.get(imp.state, T_STALE_OTHER))
        ctx.outcome = "stale"
        return None
    return imp


def _claim(import_id: int, work: Callable[[Runtime], Awaitable[Any]],
           name: str) -> Callable[[Runtime], Awaitable[None]]:
    """After commit: mark the import as running here, then start the work."""
    async def hook(rt: Runtime) -> None:
        if import_id in _running:
            return
        _running.add(import_id)

        async def run() -> None:
            try:
                await work(rt)
            finally:
                _running.discard(import_id)

        rt.spawn(run(), name=name)
    return hook


@router.action("import")
async def import_clicked(ctx: Context, object_id: str, option: str | None) -> None:
    imp = await _clickable(ctx, object_id)
    if imp is None:
        return
    accepted = int((imp.summary or {}).get("accepted") or 0)
    ctx.audit("import.confirm", "lead_import", imp.id, {"state": imp.state}, None)
    await ctx.reply(T_PUBLISHING.format(n=accepted) if accepted else T_PUBLISHING_ROWS)
    import_id, member_id, channel = imp.id, ctx.member.id, ctx.event.channel
    ctx.after_commit(_claim(import_id, lambda rt: _publish(rt, import_id, member_id, channel),
                            f"import-publish-{import_id}"))


@router.action("cancel")
async def cancel_clicked(ctx: Context, object_id: str, option: str | None) -> None:
    imp = await _clickable(ctx, object_id)
    if imp is None:
        return
    ctx.audit("import.cancel", "lead_import", imp.id, {"state": imp.state}, None)
    import_id, member_id, channel = imp.id, ctx.member.id, ctx.event.channel
    ctx.after_commit(_claim(import_id, lambda rt: _cancel(rt, import_id, member_id, channel),
                            f"import-cancel-{import_id}"))


async def _publish(rt: Runtime, import_id: int, member_id: int, channel: str | None) -> None:
    notes = import_worker.Notes(member_id, channel, T_WRITE_PROGRESS, PROGRESS_STEP)
    try:
        report = await import_worker.publish(rt, import_id, actor_id=member_id,
                                             skip_invalid=True, notes=notes, channel=channel)
    except Exception as exc:
        await publish_failed(rt, import_id, member_id, channel, exc)
        return
    await publish_done(rt, import_id, member_id, channel, report)


async def publish_failed(rt: Runtime, import_id: int, member_id: int, channel: str | None,
                         exc: BaseException) -> None:
    log.error("import %s could not be published: %s", import_id, exc, exc_info=exc)
    core = _core()
    reason = str(exc) if isinstance(exc, core.ImportError | TableError) else type(exc).__name__
    await _finish(rt, import_id, member_id, channel, T_FAILED_STATUS,
                  T_PUBLISH_FAILED.format(reason=reason))


async def publish_done(rt: Runtime, import_id: int, member_id: int, channel: str | None,
                       report: ImportReport, at: str | None = None) -> None:
    """The card closed with who imported how many, and the summary to the member."""
    _wake(rt)  # the worker's digests are in the outbox
    async with rt.sessions() as session:
        imp = await session.get(LeadImport, import_id)
        where = await _where(session, import_id)
        who = await session.get(Member, member_id)
    name = who.name if who else ""
    checked = int(((imp.summary if imp else None) or {}).get("duplicates", 0))
    late = max(0, len(report.duplicates) - checked)  # rows a lead stored meanwhile took
    if report.written == 0 and late:
        status = T_ALL_LATE_STATUS.format(name=name, at=at or _stamp(rt))
        text = T_ALL_LATE.format(n=late)
    else:
        status = T_DONE_STATUS.format(name=name, at=at or _stamp(rt), n=report.written)
        text = T_DONE.format(n=report.written, where=where) + (T_LATE.format(n=late)
                                                                if late else "")
    await _finish(rt, import_id, member_id, channel, status, text)


async def finish_interrupted(rt: Runtime) -> int:
    """Chat imports published while no server heard the result (it was killed, and the
    worker could not tell the member either): their cards are closed and the summary
    sent. For the sweep; returns how many."""
    async with rt.sessions() as session:
        open_card = select(Card.id).where(Card.kind == CARD_KIND,
                                          Card.object_id == LeadImport.id,
                                          Card.state == "open")
        found = (await session.scalars(
            select(LeadImport).where(LeadImport.origin == "chat",
                                     LeadImport.state == "published",
                                     LeadImport.actor_id.is_not(None),
                                     LeadImport.updated_at < rt.now() - FINISH_GRACE,
                                     open_card.exists())
            .order_by(LeadImport.id).limit(20))).all()
    done = 0
    for imp in found:
        if imp.id in _running or imp.actor_id is None:
            continue
        log.warning("lead import %s was published while nobody heard: closing its card",
                    imp.id)
        report = await _core().load_report(rt, imp.id)
        at = imp.updated_at.astimezone(rt.settings.zone).strftime("%m-%d %H:%M")
        await publish_done(rt, imp.id, imp.actor_id, None, report, at=at)
        done += 1
    return done


async def check_interrupted(rt: Runtime, import_id: int) -> None:
    """A chat check that stopped mid-way (its process killed) was dropped: the member,
    who saw 正在检查 and nothing more, is told to send the file again."""
    async with rt.sessions() as session:
        imp = await session.get(LeadImport, import_id)
    if imp is not None and imp.origin == "chat" and imp.actor_id is not None:
        await tell(rt, imp.actor_id, None, T_CHECK_INTERRUPTED.format(name=imp.filename))


async def expired(rt: Runtime, import_id: int, hours: int) -> None:
    """A check nobody confirmed in time was cancelled: its card loses its buttons."""
    async with rt.sessions() as session, session.begin():
        for card in await open_cards(session, CARD_KIND, import_id):
            model = CardModel.from_json(card.body)
            await update_card(session, rt, card,
                              model.closed(T_EXPIRED_STATUS.format(hours=hours, at=_stamp(rt))))
    _wake(rt)


async def _where(session: Any, import_id: int) -> str:
    rows = (await session.execute(
        select(Member.name, func.count(Lead.id))
        .join(Member, Member.id == Lead.assignee_id)
        .where(Lead.import_id == import_id)
        .group_by(Member.name).order_by(func.count(Lead.id).desc(), Member.name)
    )).all()
    queued = await session.scalar(
        select(func.count(Lead.id)).where(Lead.import_id == import_id,
                                          Lead.assignee_id.is_(None)))
    return where_they_went([(name, n) for name, n in rows], queued or 0)


async def resumed(rt: Runtime, import_id: int, written: int) -> None:
    """An import a crash stopped during its hand-out was finished by the sweep: its card
    is closed and the importer hears where the leads went."""
    async with rt.sessions() as session:
        imp = await session.get(LeadImport, import_id)
        if imp is None or imp.actor_id is None:
            return
        where = await _where(session, import_id)
    await _finish(rt, import_id, imp.actor_id, None,
                  T_RESUMED_STATUS.format(at=_stamp(rt), n=written),
                  T_RESUMED.format(name=imp.filename, n=written, where=where))


async def _cancel(rt: Runtime, import_id: int, member_id: int, channel: str | None) -> None:
    async with rt.sessions() as session:
        member = await session.get(Member, member_id)
        imp = await session.get(LeadImport, import_id)
    filename = imp.filename if imp else ""
    await _core().cancel_import(rt, import_id, actor=member)
    name = member.name if member else ""
    await _finish(rt, import_id, member_id, channel,
                  T_CANCELLED_STATUS.format(name=name, at=_stamp(rt)),
                  T_CANCELLED.format(name=filename))


async def _finish(rt: Runtime, import_id: int, member_id: int, channel: str | None,
                  status: str, text: str) -> None:
    """The import's cards closed with `status`, and `text` to whoever clicked."""
    async with rt.sessions() as session, session.begin():
        for card in await open_cards(session, CARD_KIND, import_id):
            await update_card(session, rt, card, CardModel.from_json(card.body).closed(status))
        member = await session.get(Member, member_id)
        if member is not None:
            await enqueue(session, rt, member, text, channel=channel)
    _wake(rt)
