"""The team roster: importing members from csv or xlsx, matched by name, audited.

Owns checking roster rows (every row before anything is written) and upserting them;
duty, leave and the other per-member chat commands live in their own handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import audit
from bot.router import ROLE_NAMES
from handlers.intake import canonical_tag
from handlers.phones import PhoneError, parse_phone
from handlers.tabular import (
    CellError,
    CellValue,
    Column,
    Table,
    TableError,
    TableRow,
    cell_text,
    formula_trouble,
    read_table,
    read_table_file,
    whole_number,
)
from storage.models import Member

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from config.settings import Settings

log = logging.getLogger(__name__)

ROLES = ROLE_NAMES
STATUSES = {"active": "在职", "leave": "休假", "left": "离职"}
CHANNELS = {"wecom": "企业微信", "dingtalk": "钉钉"}

COLUMNS = (
    Column("name", ("姓名",)),
    Column("role", ("角色",)),
    Column("wecom_userid", ("企业微信账号", "企业微信ID", "企业微信userid")),
    Column("dingtalk_userid", ("钉钉账号", "钉钉ID", "钉钉userid")),
    Column("mobile", ("手机", "手机号")),
    Column("manager", ("经理", "上级", "直属上级")),
    Column("industries", ("行业", "擅长行业")),
    Column("team", ("团队", "小组")),
    Column("status", ("状态",)),
    Column("max_open_leads", ("最大未跟进线索数", "接单上限")),
    Column("channel", ("渠道", "消息渠道")),
)
REQUIRED = ("name", "role", "wecom_userid", "dingtalk_userid", "mobile", "manager",
            "industries", "team")
OPTIONAL = ("status", "max_open_leads", "channel")
# The values compared, audited and written for one member.
FIELDS = ("name", "role", "wecom_userid", "dingtalk_userid", "mobile", "manager",
          "industries", "team", "status", "max_open_leads", "channel")
MAX_OPEN_LEADS_LIMIT = 10_000
NAME_LENGTH = 64
USERID_LENGTH = 64

T_REQUIRED = "必填"
T_TOO_LONG = "不能超过{n}个字符"
T_NAME_SPACE = "姓名不能包含空格（聊天命令以空格分隔，同名请写作 张伟2）"
T_NAME_TWICE = "与第{row}行重名（同名的两人请写作 张伟 和 张伟2）"
T_ROLE = "应为 rep、manager、admin、service、marketing 之一"
T_STATUS = "应为 active、leave、left 之一"
T_CHANNEL = "应为 wecom 或 dingtalk，或留空"
T_CHANNEL_NO_ID = "选择 {channel} 渠道需要填写 {column}"
T_INDUSTRY = "未知行业“{value}”（可选：{choices}）"
T_NOT_MOBILE = "应为手机号，这是座机号"
T_USERID_SPACE = "不能包含空格"
T_USERID_TWICE = "与第{row}行的 {column} 重复"
T_USERID_TAKEN = "已被成员“{name}”使用"
T_NO_MANAGER = "找不到经理“{name}”（应为本文件中的一行或已有成员）"
T_SELF_MANAGER = "不能是自己的经理"
T_MANAGER_LOOP = "经理关系形成循环：{loop}"
T_IGNORED_COLUMN = "未知的列，已忽略"
T_WRITE_FAILED = "写入失败（{why}），未写入任何成员"

T_CLI_REFUSED = "共 {n} 处错误，未写入任何成员。"
T_CLI_DONE = "已导入 {n} 人：新增 {created}，更新 {updated}，未变 {unchanged}。"


@dataclass(slots=True)
class Refusal:
    row: int
    field: str
    reason: str


@dataclass(slots=True)
class RowWarning:
    row: int
    field: str
    message: str


@dataclass(slots=True)
class RosterRow:
    """One checked row; optional columns absent from the file are not in `present`."""

    number: int
    name: str
    role: str
    wecom_userid: str | None
    dingtalk_userid: str | None
    mobile: str | None
    manager: str | None
    industries: list[str]
    team: str | None
    status: str = "active"
    max_open_leads: int | None = None
    channel: str | None = None
    present: frozenset[str] = frozenset(FIELDS)


@dataclass(slots=True, frozen=True)
class KnownMember:
    """What the checks need of a member already on the roster."""

    name: str
    wecom_userid: str | None = None
    dingtalk_userid: str | None = None
    manager: str | None = None


@dataclass
class RosterImport:
    accepted: int = 0
    written: int = 0
    rejected: list[Refusal] = field(default_factory=list)
    warnings: list[RowWarning] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "written": self.written,
            "rejected": [asdict(r) for r in self.rejected],
            "duplicates": [],
            "warnings": [asdict(w) for w in self.warnings],
        }


# --- checking one row (pure) --------------------------------------------------------


def _text(value: CellValue, limit: int) -> str | None:
    text = cell_text(value)
    if text is not None and len(text) > limit:
        raise CellError(T_TOO_LONG.format(n=limit))
    return text


def _name(value: CellValue) -> str:
    text = _text(value, NAME_LENGTH)
    if text is None:
        raise CellError(T_REQUIRED)
    if re.search(r"\s", text):
        raise CellError(T_NAME_SPACE)
    return text


def _choice(
    value: CellValue, choices: dict[str, str], error: str, default: str | None = None
) -> str | None:
    """A value of a fixed list, in English or Chinese; empty → the default, or refused."""
    text = cell_text(value)
    if text is None:
        if default is None:
            raise CellError(T_REQUIRED)
        return default
    key = canonical_tag(text, choices)
    if key is None:
        raise CellError(error)
    return key


def _userid(value: CellValue) -> str | None:
    text = _text(value, USERID_LENGTH)
    if text is not None and re.search(r"\s", text):
        raise CellError(T_USERID_SPACE)
    return text


def _mobile(value: CellValue) -> str | None:
    text = cell_text(value)
    if text is None:
        return None
    try:
        phone = parse_phone(text)
    except PhoneError as exc:
        raise CellError(str(exc)) from None
    if phone.kind != "mobile":
        raise CellError(T_NOT_MOBILE)
    return phone.stored


def _industries(value: CellValue, known: dict[str, str]) -> list[str]:
    text = cell_text(value)
    if text is None:
        return []
    out: list[str] = []
    for part in unicodedata.normalize("NFKC", text).split(";"):
        if not part.strip():
            continue
        key = canonical_tag(part, known)
        if key is None:
            choices = "、".join(f"{zh}/{en}" for en, zh in known.items())
            raise CellError(T_INDUSTRY.format(value=part.strip(), choices=choices))
        if key not in out:
            out.append(key)
    return out


def check_row(
    row: TableRow, present: set[str], industries: dict[str, str]
) -> tuple[RosterRow | None, list[Refusal]]:
    """One row's own fields; returns the checked row, or None with every refusal."""
    values = row.values
    refusals: list[Refusal] = []
    parsed: dict[str, Any] = {}
    parsers: dict[str, Any] = {
        "name": _name,
        "role": lambda v: _choice(v, ROLES, T_ROLE),
        "wecom_userid": _userid,
        "dingtalk_userid": _userid,
        "mobile": _mobile,
        "manager": lambda v: _text(v, NAME_LENGTH),
        "industries": lambda v: _industries(v, industries),
        "team": lambda v: _text(v, 64),
        "status": lambda v: _choice(v, STATUSES, T_STATUS, "active"),
        "max_open_leads": lambda v: whole_number(v, limit=MAX_OPEN_LEADS_LIMIT),
        "channel": lambda v: _choice(v, CHANNELS, T_CHANNEL, ""),
    }
    for name, parse in parsers.items():
        trouble = formula_trouble(values.get(name))
        if trouble is not None:
            refusals.append(Refusal(row.number, name, trouble))
            continue
        try:
            parsed[name] = parse(values.get(name))
        except CellError as exc:
            refusals.append(Refusal(row.number, name, str(exc)))
    channel = parsed.get("channel") or None
    id_column = f"{channel}_userid"
    if channel and id_column in parsed and not parsed[id_column]:
        refusals.append(Refusal(row.number, "channel",
                                T_CHANNEL_NO_ID.format(channel=channel, column=id_column)))
    if refusals:
        return None, refusals
    parsed["channel"] = channel
    return RosterRow(number=row.number, present=frozenset(
        f for f in FIELDS if f in REQUIRED or f in present), **parsed), []


# --- checking the rows together (pure) ----------------------------------------------


def check_roster(
    rows: list[RosterRow], known: Sequence[KnownMember],
    names_in_file: Sequence[tuple[int, str]] | None = None,
) -> list[Refusal]:
    """Names and platform ids unique, managers that exist, no manager loops.

    `names_in_file` holds (row, name) of every row that has a name, refused or not, so a
    row is not told its manager is missing when the manager's own row has another fault.
    """
    refusals: list[Refusal] = []
    first_row: dict[str, int] = {}
    for number, name in names_in_file or [(r.number, r.name) for r in rows]:
        if name in first_row:
            refusals.append(Refusal(number, "name", T_NAME_TWICE.format(row=first_row[name])))
        else:
            first_row[name] = number
    in_file = set(first_row)
    others = [m for m in known if m.name not in in_file]
    for column in ("wecom_userid", "dingtalk_userid"):
        owner_row: dict[str, int] = {}
        holder = {getattr(m, column): m.name for m in others if getattr(m, column)}
        for row in rows:
            value = getattr(row, column)
            if not value:
                continue
            if value in owner_row:
                refusals.append(Refusal(row.number, column, T_USERID_TWICE.format(
                    row=owner_row[value], column=column)))
            elif value in holder:
                refusals.append(Refusal(row.number, column,
                                        T_USERID_TAKEN.format(name=holder[value])))
            else:
                owner_row[value] = row.number
    known_names = in_file | {m.name for m in known}
    for row in rows:
        if row.manager is None:
            continue
        if row.manager == row.name:
            refusals.append(Refusal(row.number, "manager", T_SELF_MANAGER))
        elif row.manager not in known_names:
            refusals.append(Refusal(row.number, "manager",
                                    T_NO_MANAGER.format(name=row.manager)))
    refusals.extend(_manager_loops(rows, others))
    return refusals


def _manager_loops(rows: list[RosterRow], others: Sequence[KnownMember]) -> list[Refusal]:
    boss = {m.name: m.manager for m in others}
    boss.update({r.name: r.manager for r in rows})
    number = {r.name: r.number for r in rows}
    refusals = []
    reported: set[str] = set()
    for row in rows:
        chain = [row.name]
        current = boss.get(row.name)
        while current is not None and current not in chain and current != row.name:
            chain.append(current)
            current = boss.get(current)
        if current != row.name or len(chain) < 2 or row.name in reported:
            continue
        loop = " → ".join([*chain, row.name])
        for name in chain:
            reported.add(name)
            if name in number:
                refusals.append(Refusal(number[name], "manager",
                                        T_MANAGER_LOOP.format(loop=loop)))
    return refusals


def check_table(
    table: Table, known: Sequence[KnownMember], industries: dict[str, str]
) -> tuple[list[RosterRow], list[Refusal]]:
    present = set(table.fields)
    checked: list[RosterRow] = []
    refusals: list[Refusal] = []
    names: list[tuple[int, str]] = []
    for row in table.rows:
        good, bad = check_row(row, present, industries)
        refusals.extend(bad)
        if good is not None:
            checked.append(good)
        if "name" not in {r.field for r in bad}:
            names.append((row.number, cell_text(row.values.get("name")) or ""))
    refusals.extend(check_roster(checked, known, names))
    refusals.sort(key=lambda r: (r.row, FIELDS.index(r.field)))
    return checked, refusals


# --- writing -----------------------------------------------------------------------


def _snapshot(member: Member, names: Mapping[int, str]) -> dict[str, Any]:
    return {
        "name": member.name, "role": member.role, "wecom_userid": member.wecom_userid,
        "dingtalk_userid": member.dingtalk_userid, "mobile": member.mobile,
        "manager": names.get(member.manager_id) if member.manager_id else None,
        "industries": list(member.industries or []), "team": member.team,
        "status": member.status, "max_open_leads": member.max_open_leads,
        "channel": member.channel,
    }


async def _write(
    session: AsyncSession, rows: list[RosterRow], members: dict[str, Member],
    actor: Member | None, now: datetime, result: RosterImport,
) -> None:
    names = {m.id: m.name for m in members.values()}
    before = {name: _snapshot(m, names) for name, m in members.items()}
    # Platform ids are unique: free the ones that move before any is taken, so two
    # members may swap ids in one file.
    for row in rows:
        member = members.get(row.name)
        if member is None:
            continue
        for column in ("wecom_userid", "dingtalk_userid"):
            if getattr(member, column) != getattr(row, column):
                setattr(member, column, None)
    await session.flush()
    for row in rows:
        member = members.get(row.name)
        if member is None:
            member = Member(name=row.name, role=row.role, status="active", industries=[],
                            created_at=now, updated_at=now)
            session.add(member)
            members[row.name] = member
        for column in FIELDS:
            if column in ("name", "manager") or column not in row.present:
                continue
            setattr(member, column, getattr(row, column))
    await session.flush()
    # Managers last: a row may name a manager that appears later in the file.
    for row in rows:
        member = members[row.name]
        manager = members.get(row.manager) if row.manager else None
        member.manager_id = manager.id if manager else None
    await session.flush()
    names = {m.id: m.name for m in members.values()}
    for row in rows:
        member = members[row.name]
        after = _snapshot(member, names)
        old = before.get(row.name)
        if old is None:
            audit(session, actor, "member.create", "member", member.id, None, after, now)
            result.created += 1
            continue
        changed = [k for k in FIELDS if old[k] != after[k]]
        if not changed:
            result.unchanged += 1
            continue
        member.updated_at = now
        audit(session, actor, "member.update", "member", member.id,
              {k: old[k] for k in changed}, {k: after[k] for k in changed}, now)
        result.updated += 1
    result.written = len(rows)


async def import_table(
    rt: Runtime, table: Table, *, actor: Member | None = None, drain: bool = True
) -> RosterImport:
    """Check every row, then write all of them in one transaction, or none."""
    result = RosterImport(warnings=[RowWarning(table.header_row, title, T_IGNORED_COLUMN)
                                    for title in table.ignored])
    now = rt.now()
    try:
        # Checked and written in one transaction, so no other writer slips in between; a
        # roster is a few hundred rows, short enough for SQLite's one writer.
        async with rt.sessions() as session, session.begin():
            members = {m.name: m for m in (await session.scalars(select(Member))).all()}
            names = {m.id: m.name for m in members.values()}
            known = [KnownMember(m.name, m.wecom_userid, m.dingtalk_userid,
                                 names.get(m.manager_id) if m.manager_id else None)
                     for m in members.values()]
            rows, refusals = check_table(table, known, rt.settings.leads.industries)
            if refusals:
                result.rejected = refusals
                result.accepted = len({r.number for r in rows} -
                                      {r.row for r in refusals})
                return result
            result.accepted = len(rows)
            await _write(session, rows, members, actor, now, result)
    except IntegrityError as exc:
        # Another writer took a name or an id between our check and our write.
        log.warning("roster import failed on a unique constraint: %s", type(exc).__name__)
        result.written = result.created = result.updated = result.unchanged = 0
        result.rejected = [Refusal(table.header_row, "roster",
                                   T_WRITE_FAILED.format(why="名称或账号已被占用"))]
        return result
    log.info("roster import: %d rows, %d created, %d updated", result.written,
             result.created, result.updated)
    if drain and result.written and getattr(rt, "outbox", None) is not None:
        from handlers.assignment import drain_queue

        await drain_queue(rt)  # new or returning reps may take queued leads
    return result


async def import_roster(
    rt: Runtime, data: bytes, filename: str, *, actor: Member | None = None,
    drain: bool = True,
) -> RosterImport:
    """Import a roster file's bytes (csv or xlsx); raises TableError when unreadable."""
    # Parsing a workbook is CPU work: keep it off the event loop.
    table = await asyncio.to_thread(read_table, data, filename, COLUMNS, required=REQUIRED)
    return await import_table(rt, table, actor=actor, drain=drain)


async def import_roster_rows(
    rt: Runtime, rows: Sequence[Mapping[str, CellValue]], *, actor: Member | None = None,
    drain: bool = True,
) -> RosterImport:
    """Import rows given as {field: value}; they are numbered from 2, as under a header."""
    present = [f for f in FIELDS if any(f in r for r in rows)]
    table = Table(header_row=1, fields=present, rows=[
        TableRow(number, {f: row.get(f) for f in present})
        for number, row in enumerate(rows, start=2)
    ])
    return await import_table(rt, table, actor=actor, drain=drain)


async def import_roster_cli(settings: Settings, path: Path, *, as_json: bool = False) -> int:
    """`salesbot team import FILE`: 0 written, 1 rows refused (nothing written), 2 unreadable."""
    from bot.runtime import Runtime

    try:
        table = read_table_file(Path(path), COLUMNS, required=REQUIRED)
    except TableError as exc:
        print(f"salesbot: {exc}", file=sys.stderr)
        if as_json:
            print(json.dumps(RosterImport().as_json() | {"error": str(exc)},
                             ensure_ascii=False))
        return 2
    rt = Runtime(settings)
    try:
        # The running server's lead sweep offers queued leads to new reps.
        result = await import_table(rt, table, drain=False)
    finally:
        await rt.close()
    for refusal in result.rejected:
        print(f"第{refusal.row}行 {refusal.field}: {refusal.reason}", file=sys.stderr)
    if result.rejected:
        print(T_CLI_REFUSED.format(n=len(result.rejected)), file=sys.stderr)
    else:
        print(T_CLI_DONE.format(n=result.written, created=result.created,
                                updated=result.updated, unchanged=result.unchanged))
    if as_json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
    return 1 if result.rejected else 0
