"""The merge comparison page: a proposal's records side by side, behind a signed link.

Owns the link (signed with bot.uploads' tokens, for one admin and one proposal, 72 h)
and the page; what a proposal holds is handlers.merging's, and how a field reads in
Chinese handlers.merge_chat's.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.uploads import HEADERS, PAGE, STYLE, BadLink, public_url, read_token, signed_token
from storage.models import Member, MergeProposal

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.merging import Record

log = logging.getLogger(__name__)

PURPOSE = "merge"

T_TITLE = "合并对比：建议 #{id}"
T_PAGE_TITLE = "合并对比"
T_FORGED = "链接无效。请在聊天里合并建议卡片上的「逐项对比」重新打开。"
T_EXPIRED = "链接已过期（72 小时内有效）。发送 /合并扫描，仍待处理的建议会重新发卡片和链接。"
T_NOT_ALLOWED = "只有管理员可以查看合并对比。"
T_NO_PROPOSAL = "没有找到这条合并建议。"
T_INTRO = ("{n} 条记录，{reasons}相同。建议保留 #{survivor}（{basis}）。"
           "标 ≠ 的字段各条记录不一致；「合并后」一列是合并后客户 #{survivor} 的值。")
T_STATE = {
    "merged": "这组客户已经合并。",
    "undone": "这组客户的合并已撤销。",
    "notdup": "这组客户已标记为不是重复。",
    "split": "这条建议已拆分：拆出的记录和其余的记录各自重新提出。",
    "superseded": "这条建议已失效：之后的扫描发现记录有变化。",
}
T_FIELD = "字段"
T_KEEP = "#{id}（保留）"
T_AFTER = "合并后"
T_DIFFERS = "≠"
T_LEADS, T_FOLLOW_UPS, T_ACTIVITY, T_CREATED = "线索", "跟进", "最近活动", "建档时间"
T_EMPTY = "—"

TABLE_STYLE = """main { max-width: 60em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #e3e5e8; padding: .45em .6em; text-align: left;
  vertical-align: top; white-space: nowrap; }
tr.diff th, tr.diff td { background: #fff4e0; }
td.after { font-weight: 600; background: #eef4ff; }
.mark { color: #d4380d; font-weight: 700; }
.empty { color: #999; }
"""


async def comparison_link(
    session: AsyncSession, rt: Runtime, member: Member, proposal_id: int
) -> str | None:
    """The admin's link to the proposal's comparison, or None without a public URL."""
    base = public_url(rt)
    if base is None:
        return None
    token = await signed_token(session, rt, member.id, PURPOSE, object_id=proposal_id)
    return f"{base}/merge/{token}"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/merge/{token}", page)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=PAGE.format(title=html.escape(title), body=body,
                                         style=STYLE + TABLE_STYLE), status=status,
                        content_type="text/html", charset="utf-8", headers=HEADERS)


def _refused(status: int, text: str) -> web.Response:
    return _page(T_PAGE_TITLE, f'<p class="note error">{html.escape(text)}</p>', status)


def _cell(text: str, css: str = "") -> str:
    shown = html.escape(text) if text else f'<span class="empty">{T_EMPTY}</span>'
    return f'<td class="{css}">{shown}</td>' if css else f"<td>{shown}</td>"


async def page(request: web.Request) -> web.Response:
    """GET /merge/{token}: the comparison, for the admin the link was made for."""
    from bot.app import RUNTIME
    from handlers import merge_chat, merging

    rt = request.app[RUNTIME]
    async with rt.sessions() as session, session.begin():
        try:
            token = await read_token(session, rt, request.match_info["token"], PURPOSE)
        except BadLink as exc:
            log.info("merge comparison link refused: %s", exc)
            return _refused(403, T_EXPIRED if exc.expired else T_FORGED)
        member = await session.get(Member, token.member_id)
        if member is None or member.status == "left" or member.role != "admin":
            return _refused(403, T_NOT_ALLOWED)
        proposal = (await session.get(MergeProposal, token.object_id)
                    if token.object_id else None)
        if proposal is None:
            return _refused(404, T_NO_PROPOSAL)
        records = merge_chat.in_order(
            proposal, await merging.load_records(session, proposal.member_ids))
        names = await merge_chat.member_names(
            session, [r.values.get("owner_id") for r in records]
            + [(proposal.values or {}).get("owner_id")])
    if len(records) < 2:
        return _refused(404, T_NO_PROPOSAL)
    basis = merge_chat.T_BASIS[merging.survivor_basis(records, proposal.survivor_id)]
    intro = T_INTRO.format(n=len(records), reasons=merge_chat.reasons_text(proposal.reasons),
                           survivor=proposal.survivor_id, basis=basis)
    body = [f'<p class="note">{html.escape(intro)}</p>']
    if proposal.state in T_STATE:
        body.append(f'<p class="note error">{html.escape(T_STATE[proposal.state])}</p>')
    body.append(_table(rt, proposal, records, names))
    return _page(T_TITLE.format(id=proposal.id), "\n".join(body))


def _table(rt: Runtime, proposal: MergeProposal, records: list[Record],
           names: dict[int, str]) -> str:
    from handlers import merge_chat, merging

    titles = [T_KEEP.format(id=r.id) if r.id == proposal.survivor_id else f"#{r.id}"
              for r in records]
    head = "".join(f"<th>{html.escape(t)}</th>" for t in [T_FIELD, *titles, T_AFTER])
    lines = [f"<tr>{head}</tr>"]
    keep = merging.values_to_keep(proposal.values or {},
                                  merging.surviving_values(records, proposal.survivor_id))
    for row in merging.compare(records, keep):
        label = html.escape(merge_chat.FIELD_LABELS[row.name])
        if row.differs:
            label = f'<span class="mark">{T_DIFFERS}</span> {label}'
        cells = [_cell(merge_chat.display(row.name, v, names, rt)) for v in row.values]
        cells.append(_cell(merge_chat.display(row.name, row.surviving, names, rt), "after"))
        css = ' class="diff"' if row.differs else ""
        lines.append(f'<tr{css} data-field="{row.name}"><th>{label}</th>{"".join(cells)}</tr>')

    def stamp(moment: datetime | None) -> str:
        return merge_chat.stamp_day(moment, rt)

    latest = max((r.last_activity for r in records if r.last_activity), default=None)
    survivor = next(r for r in records if r.id == proposal.survivor_id)
    history = [
        (T_LEADS, [str(r.leads) for r in records], str(sum(r.leads for r in records))),
        (T_FOLLOW_UPS, [str(r.follow_ups) for r in records],
         str(sum(r.follow_ups for r in records))),
        (T_ACTIVITY, [stamp(r.last_activity) for r in records], stamp(latest)),
        (T_CREATED, [stamp(r.created_at) for r in records], stamp(survivor.created_at)),
    ]
    for label, values, after in history:
        cells = "".join(_cell(v) for v in values) + _cell(after, "after")
        lines.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return '<div class="scroll"><table>' + "\n".join(lines) + "</table></div>"
