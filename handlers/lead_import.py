"""Importing leads from a spreadsheet: every row checked and staged, then published at once.

Owns reading and checking lead rows, the staging table, publishing, the assignment digest
and `salesbot leads import|template`; the chat side (/导入, the upload page, the card) is
another module's, and calls check_import / publish_import / cancel_import.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Text, and_, cast, delete, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import audit
from handlers.assignment import fair_allowance, rep_states, route_leads
from handlers.customers import lock_door
from handlers.intake import URGENCIES, canonical_tag
from handlers.matching import KeyIndex, MatchKeys, keys_for, stored_by_keys
from handlers.phones import Phone, PhoneError, parse_phone
from handlers.tabular import (
    BLANK_RUN,
    PLACEHOLDERS,
    CellError,
    CellValue,
    Column,
    TableError,
    TableRow,
    cell_text,
    clean_header,
    clean_text,
    formula_trouble,
    read_table,
    whole_number,
)
from storage.models import (
    AuditLog,
    Lead,
    LeadImport,
    LeadImportRow,
    LeadStatusChange,
    MatchGram,
    Member,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from config.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], Awaitable[None]]

COLUMNS = (
    Column("company", ("公司名称", "客户名称", "企业名称")),
    Column("contact", ("联系人", "姓名")),
    Column("phone", ("手机号", "手机", "电话", "联系电话"), overflow="landline"),
    Column("landline", ("座机", "固话")),
    Column("email", ("邮箱", "电子邮箱")),
    Column("industry", ("行业",)),
    Column("urgency", ("紧急程度",)),
    Column("source", ("来源渠道", "来源")),
    Column("note", ("备注",)),
    Column("owner", ("负责人",)),
    Column("first_contact", ("首次联系",)),
    Column("employees", ("员工数",)),
    Column("external_id", ("外部编号",)),
)
FIELDS = tuple(c.field for c in COLUMNS)
TAGS = ("industry", "urgency", "source")
LIMITS = {"company": 200, "contact": 64, "email": 200, "note": 2000, "owner": 64,
          "external_id": 128}
EMPLOYEES_LIMIT = 10_000_000
# What a problem row keeps of each cell for its report: longer than any field may be (so
# the reason still shows), never the whole of a cell of megabytes.
RAW_CHARS = max(LIMITS.values()) + 100
# Rows checked, deduplicated and staged per step: each step's write is one short
# transaction, so chat callbacks sharing SQLite's one writer keep their deadlines.
CHUNK = 2000
# Rows written per transaction: a few tens of milliseconds of SQLite's write lock.
WRITE_CHUNK = 500
# Leads routed per transaction after a publish (each offer writes three rows): about
# 70 ms of the write lock.
ROUTE_CHUNK = 25
DIGEST_IDS = 5
# A checked import waits this long for 导入 or 取消; its problem rows are kept as long as
# the link to them lives (bot.uploads: 72 hours), then deleted.
CHECKED_KEEP = timedelta(hours=24)
PROBLEMS_KEEP = timedelta(hours=72)
# Numbers written into one cell one after another: 13800000001/13800000002.
_SEVERAL = re.compile(r"\s*[/／、,，;；|\n]\s*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
                   r"(?:[ T]+(\d{1,2})[:：](\d{2})(?:[:：](\d{2}))?)?")
_COMPACT_DATE = re.compile(r"((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
# An ISO 8601 date-time as people write it; not a week (2024-W01) or a day of the year.
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                            r"(?:Z|[+-]\d{2}(?::?\d{2})?)?)?")
_EXCEL_EPOCH = date(1899, 12, 30)
_YEARS = (1990, 2100)

# --- what the user reads -------------------------------------------------------------
T_REQUIRED = "必填"
T_TOO_LONG = "不能超过{n}个字符"
T_CONTROL = "含有不可见的控制字符"
T_EMAIL = "邮箱格式不正确"
T_TAG = "未知的取值“{value}”（可选：{choices}）"
T_NEED_PHONE = "手机号和座机至少填写一个"
T_LOST_ZERO = "疑似丢失区号前导0"
T_LOST_ZERO_ONLY = "疑似丢失区号前导0，号码已记入备注待核对（这条线索暂无可拨打的电话）"
T_NOT_LANDLINE = "应为带区号的座机号，这是手机号"
T_SECOND_MOBILE = "第二个手机号，已记入备注"
T_SECOND_MOBILE_NOTE = "另一个手机号：{number}"
T_SEVERAL_NUMBERS = "一格里有多个号码，第一个已使用，其余已记入备注"
T_OTHER_NUMBER_NOTE = "另一个号码：{number}"
T_NO_OWNER = "名单中没有“{name}”"
T_OWNER_NOT_REP = "“{name}”不是在职的销售，不能作为负责人"
T_DATE = "无法识别的日期（应为 2024-01-03、2024/01/03、20240103 或 Excel 日期）"
T_DATE_RANGE = "日期超出范围（{low}–{high} 年）"
T_DATE_FUTURE = "日期不能晚于明天（{tomorrow}）"
T_UNKNOWN_DEFAULT = "--default 的字段“{field}”不存在（可用：{fields}）"
T_BAD_DEFAULT = "--default {field}={value} 无效：{reason}"
T_DEFAULT_FORM = "--default 应写作 字段=值，例如 --default 来源=展会"
T_DEFAULT_TWICE = "--default 给字段“{field}”指定了两次，请只保留一个"
T_IGNORED_COLUMN = "未知的列，已忽略"
T_STOPPED = "从这一行起连续 {n} 行是空行，其后的内容没有读取"
T_REPEATED_COLUMN = "与前面的列重复，已忽略"
T_LOST_ZERO_NOTE = "座机（疑似丢失区号前导0，待核对）：{digits}"
T_NO_IMPORT = "找不到导入批次 #{id}"
T_CANCELLED = "导入批次 #{id} 已取消，不能再导入"
T_INTERRUPTED = "检查中断（进程结束），未完成"
T_CHECK_DROPPED = "导入批次 #{id} 的检查停顿太久，已被清除，请重新导入"
T_REASON = "原因"
T_ROW = "行号"
T_DUP_IN_FILE = "与第{of}行重复"
T_DUP_LEAD = "与已有线索 #{of} 重复"
T_DUP_CUSTOMER = "与已有客户 #{of} 重复"
T_DUP_EXTERNAL = "外部编号已导入过（线索 #{of}）"
T_OWNER_REASON = "导入（负责人）"
T_IMPORTED = "导入"
T_DIGEST = ("导入分配给您 {n} 条新线索（{ids}），发送 /我的线索 查看并接受；"
            "一个工作日内未接受的线索会转给其他同事")
T_OWNER_DIGEST = ("导入给您 {n} 条线索（{ids}），表中负责人是您，已直接记在您名下；"
                  "发送 /我的线索 查看")
T_CLI_ROW = "第{row}行 {field}: {reason}"
T_CLI_DUP = "第{row}行 重复: {reason}（未导入）"
T_CLI_WARN = "第{row}行 {field}: {message}（提示）"
T_CLI_PROGRESS = "已检查 {done}/{total} 行"
T_CLI_PUBLISH_PROGRESS = "已分配 {done}/{total} 条"
T_CLI_WARN_BARE = "第{row}行: {message}（提示）"
T_CLI_NOT_FOUND = "找不到文件 {path}"
T_CLI_UNREADABLE = "无法读取文件：{why}"
T_CLI_UNWRITABLE = "无法写入 {path}：{why}"
T_CLI_SUMMARY = ("共 {rows} 行：可导入 {accepted}，拒绝 {rejected}，重复 {duplicates}，"
                 "提示 {warnings}。")
T_CLI_DRY = "试运行：未写入任何线索。"
T_CLI_REFUSED = "有被拒绝的行，未写入任何线索（可用 --skip-invalid 只导入有效行）。"
T_CLI_WRITTEN = "已导入 {n} 条线索（导入批次 #{id}）。"
T_CLI_TEMPLATE = "已写入导入模板 {path}"
# Every error line of the command line starts with the program's name, as Unix tools do.
CLI_PREFIX = "salesbot: "
# Without a terminal (a log, a pipe), progress is a plain line each this many rows.
CLI_PROGRESS_STEP = 5000
T_TEMPLATE_EXT = "模板文件应以 .xlsx 或 .csv 结尾"
HEADERS = {c.field: c.aliases[0] for c in COLUMNS}


class ImportError(TableError):  # noqa: A001 - the name the chat side imports
    """The file (or the options) cannot be used at all; the message is Chinese."""


@dataclass
class ImportOptions:
    sheet: str | None = None
    defaults: dict[str, str] = field(default_factory=dict)  # --default FIELD=VALUE
    skip_invalid: bool = False


@dataclass
class ImportReport:
    """INTERFACE.md's --json object (as_json), plus which import and its state."""

    import_id: int | None
    accepted: int
    written: int
    rejected: list[dict]
    duplicates: list[dict]
    warnings: list[dict]
    state: str = "checked"

    def as_json(self) -> dict:
        return {"accepted": self.accepted, "written": self.written,
                "rejected": self.rejected, "duplicates": self.duplicates,
                "warnings": self.warnings}


# --- checking one row (pure) -----------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Rules:
    """What checking a row needs to know besides the row."""

    industries: dict[str, str]
    sources: dict[str, str]
    zone: ZoneInfo
    defaults: dict[str, CellValue] = field(default_factory=dict)
    # Roster name → (member id, None) for an active rep, or (None, why it cannot own).
    owners: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)
    # Dates from this instant on are refused as in the future (None: no check).
    latest: datetime | None = None


@dataclass(slots=True)
class CheckedRow:
    number: int
    lead: dict[str, Any]  # the staged columns: company … external_id, owner_id
    refusals: list[tuple[str, str]] = field(default_factory=list)  # (field, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (field, message)
    raw: dict[str, str | None] = field(default_factory=dict)
    # What the duplicate check compares (a row without refusals): as a stored lead's
    # keys, its phone else its landline. Computed once: the normalisation is the
    # costliest part of a row's check.
    match: MatchKeys = field(default_factory=MatchKeys)


def _blank(value: CellValue) -> bool:
    """Empty, or a placeholder people type for "nothing here"."""
    if value is None:
        return True
    if isinstance(value, str):
        text = clean_text(unicodedata.normalize("NFKC", value)).strip()
        return not text or text.casefold() in PLACEHOLDERS
    return False


def _text(value: CellValue, name: str) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = cell_text(int(value) if float(value).is_integer() else value)
    else:
        text = cell_text(value)
    if text is None:
        return None
    if name in LIMITS and len(text) > LIMITS[name]:
        raise CellError(T_TOO_LONG.format(n=LIMITS[name]))
    if _CONTROL.search(text if name == "note" else text.replace("\n", "\0")):
        raise CellError(T_CONTROL)
    return text


def _lost_zero(text: str) -> bool:
    """An area-code landline whose leading 0 a number cell dropped: 75512345678, and
    Beijing's 1012345678 (010-12345678); a 400 or 800 service number is whole already."""
    digits = unicodedata.normalize("NFKC", text).strip()
    if digits.endswith(".0"):
        digits = digits[:-2]
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0"):
        return False
    try:
        parse_phone(digits)
        return False  # a whole number already: a 400 service line
    except PhoneError:
        pass
    try:
        return parse_phone("0" + digits).kind == "landline"
    except PhoneError:
        return False


def _phone(value: CellValue, name: str, warnings: list[tuple[str, str]],
           others: list[str]) -> Phone | None:
    """The cell's number; of several (13800000001/13800000002), the first, the rest
    added to `others` for the note."""
    if _blank(value):
        return None
    text = cell_text(int(value) if isinstance(value, float) and value.is_integer() else value)
    if text is None:
        return None
    parts = [part for part in _SEVERAL.split(text) if part]
    if len(parts) > 1:
        try:
            phones = [parse_phone(part) for part in parts]
        except PhoneError:
            pass  # not a list of numbers: read whole, and refused with its reason
        else:
            warnings.append((name, T_SEVERAL_NUMBERS))
            others.extend(phone.stored for phone in phones[1:])
            return phones[0]
    if _lost_zero(text):
        warnings.append((name, T_LOST_ZERO))  # for review: never guessed
        return None
    try:
        return parse_phone(text)
    except PhoneError as exc:
        raise CellError(str(exc)) from None


def _tag(value: CellValue, choices: dict[str, str]) -> str:
    text = None if _blank(value) else cell_text(value)
    if text is None:
        raise CellError(T_REQUIRED)
    key = canonical_tag(text, choices)
    if key is None:
        listed = "、".join(f"{zh}/{en}" for en, zh in choices.items())
        raise CellError(T_TAG.format(value=text, choices=listed))
    return key


def parse_date(
    value: CellValue, zone: ZoneInfo, latest: datetime | None = None
) -> datetime | None:
    """A date or date-time cell, text or an Excel serial (days from 1899-12-30), in UTC;
    a date without a time is midnight in the team's timezone. From `latest` on, a date
    is refused as in the future."""
    if _blank(value):
        return None
    if isinstance(value, bool) or isinstance(value, time):
        raise CellError(T_DATE)
    if isinstance(value, int) and _COMPACT_DATE.fullmatch(str(value)):
        value = str(value)  # 20240103 typed into a number cell: no serial is that large
    if isinstance(value, str):
        text = unicodedata.normalize("NFKC", value).strip()
        if re.fullmatch(r"\d{5}(?:\.\d+)?", text):
            value = float(text)  # a serial saved as text by a csv export
        else:
            value = _date_text(text)
    if isinstance(value, int | float):
        try:
            value = datetime.combine(_EXCEL_EPOCH, time()) + timedelta(days=float(value))
        except OverflowError:
            raise CellError(T_DATE_RANGE.format(low=_YEARS[0], high=_YEARS[1])) from None
        value = value.replace(microsecond=0)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    assert isinstance(value, datetime)
    if not _YEARS[0] <= value.year <= _YEARS[1]:
        raise CellError(T_DATE_RANGE.format(low=_YEARS[0], high=_YEARS[1]))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    if latest is not None and value >= latest:
        tomorrow = (latest.astimezone(zone) - timedelta(days=1)).date()
        raise CellError(T_DATE_FUTURE.format(tomorrow=tomorrow.isoformat()))
    return value.astimezone(UTC)


def latest_date(now: datetime, zone: ZoneInfo) -> datetime:
    """The first instant a first contact cannot be at: after tomorrow in the team's
    timezone (a day of slack for a clock or a zone set wrong)."""
    today = now.astimezone(zone).date()
    return datetime.combine(today + timedelta(days=2), time(), tzinfo=zone)


def _date_text(text: str) -> datetime:
    """2024-01-03, 2024/1/3, 2024年1月3日 (with a time or not), 20240103, or ISO 8601
    with a zone (2024-01-03T09:30:00+08:00)."""
    compact = _COMPACT_DATE.fullmatch(text)
    match = _DATE.fullmatch(text)
    if compact is not None:
        parts = tuple(int(g) for g in compact.groups()) + (0, 0, 0)
    elif match is not None:
        parts = tuple(int(g) if g else 0 for g in match.groups())
    elif _ISO_DATE_TIME.fullmatch(text):
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CellError(T_DATE) from None
    else:
        raise CellError(T_DATE)
    try:
        return datetime(*parts)
    except ValueError:
        raise CellError(T_DATE) from None


def _owner(value: CellValue, rules: Rules) -> int | None:
    name = _text(value, "owner")
    if name is None:
        return None
    member_id, why = rules.owners.get(name, (None, T_NO_OWNER.format(name=name)))
    if member_id is None:
        raise CellError(why or T_NO_OWNER.format(name=name))
    return member_id


def _email(value: CellValue) -> str | None:
    text = _text(value, "email")
    if text is not None and not _EMAIL.fullmatch(text):
        raise CellError(T_EMAIL)
    return text


def check_row(row: TableRow, rules: Rules) -> CheckedRow:
    """One row's own fields: the lead's columns, or every refusal with its field."""
    values = dict(row.values)
    for name, default in rules.defaults.items():
        if values.get(name) is None or (name != "employees" and _blank(values.get(name))):
            values[name] = default
    warnings: list[tuple[str, str]] = []
    others: list[str] = []  # numbers after the first in a cell
    parsers: dict[str, Callable[[CellValue], Any]] = {
        "company": lambda v: _text(v, "company"),
        "contact": lambda v: _text(v, "contact"),
        "phone": lambda v: _phone(v, "phone", warnings, others),
        "landline": lambda v: _phone(v, "landline", warnings, others),
        "email": _email,
        "industry": lambda v: _tag(v, rules.industries),
        "urgency": lambda v: _tag(v, URGENCIES),
        "source": lambda v: _tag(v, rules.sources),
        "note": lambda v: _text(v, "note"),
        "owner": lambda v: _owner(v, rules),
        "first_contact": lambda v: parse_date(v, rules.zone, rules.latest),
        "employees": lambda v: whole_number(v, limit=EMPLOYEES_LIMIT),
        "external_id": lambda v: _text(v, "external_id"),
    }
    parsed: dict[str, Any] = {}
    refusals: list[tuple[str, str]] = []
    for name, parse in parsers.items():
        value = values.get(name)
        trouble = formula_trouble(value)
        if trouble is not None:
            refusals.append((name, trouble))
            continue
        try:
            parsed[name] = parse(value)
        except CellError as exc:
            refusals.append((name, str(exc)))
    for name in ("company", "contact"):
        if name in parsed and parsed[name] is None:
            refusals.append((name, T_REQUIRED))
    mobile, landline = parsed.get("phone"), parsed.get("landline")
    kept = [T_OTHER_NUMBER_NOTE.format(number=n) for n in others]  # lines the note gains
    if landline is not None and landline.kind != "landline":
        if mobile is None and "phone" not in {name for name, _ in refusals}:
            mobile, landline = landline, None  # 电话 beside 手机 held a mobile: use it
        elif mobile is not None and mobile.kind == "mobile":
            # Two mobiles (手机 and 电话 both): the first is the phone, the second is kept.
            warnings.append(("landline", T_SECOND_MOBILE))
            kept.append(T_SECOND_MOBILE_NOTE.format(number=landline.stored))
            landline = None
        else:
            refusals.append(("landline", T_NOT_LANDLINE))
            landline = None
    parsed["phone"] = mobile.stored if mobile else None
    parsed["landline"] = landline.stored if landline else None
    failed = {name for name, _ in refusals}
    lost = [name for name, message in warnings if message == T_LOST_ZERO]
    if not parsed["phone"] and not parsed["landline"] and not failed & {"phone", "landline"}:
        if lost:
            # The only number lost its 0: the row is kept (a warning rejects nothing),
            # the digits in its note; the rep supplies the area code's 0.
            warnings = [(n, T_LOST_ZERO_ONLY if n == lost[0] and m == T_LOST_ZERO else m)
                        for n, m in warnings]
        else:
            refusals.append(("phone", T_NEED_PHONE))
    if lost:
        # Not guessed, not lost either: the digits stay on the lead for the rep to check.
        digits = cell_text(values.get(lost[0]))
        kept.insert(0, T_LOST_ZERO_NOTE.format(digits=(digits or "").removesuffix(".0")))
    if kept and "note" not in failed:
        parsed["note"] = "\n".join([parsed["note"], *kept] if parsed.get("note") else kept)
    refusals.sort(key=lambda r: FIELDS.index(r[0]))
    lead = {
        "company": parsed.get("company"), "contact": parsed.get("contact"),
        "phone": parsed.get("phone"), "landline": parsed.get("landline"),
        "email": parsed.get("email"), "industry": parsed.get("industry"),
        "urgency": parsed.get("urgency"), "source": parsed.get("source"),
        "note": parsed.get("note"), "owner_id": parsed.get("owner"),
        "first_contact_at": parsed.get("first_contact"), "employees": parsed.get("employees"),
        "external_id": parsed.get("external_id"),
    }
    raw = {name: _raw(row.values.get(name)) for name in row.values}
    match = MatchKeys() if refusals else keys_for(
        lead["company"], lead["contact"], lead["phone"] or lead["landline"], lead["email"])
    return CheckedRow(row.number, lead, refusals, warnings, raw, match)


def _raw(value: CellValue) -> str | None:
    """A cell as a problem row keeps it: as text, at most RAW_CHARS characters."""
    text = cell_text(value)
    return text[:RAW_CHARS] + "…" if text is not None and len(text) > RAW_CHARS else text


def parse_defaults(pairs: Iterable[str]) -> dict[str, str]:
    """`--default 来源=展会` → {"source": "展会"}; a field by its name or any header."""
    lookup = {clean_header(a): c.field for c in COLUMNS for a in (c.field, *c.aliases)}
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise ImportError(T_DEFAULT_FORM)
        key = lookup.get(clean_header(name))
        if key is None:
            raise ImportError(T_UNKNOWN_DEFAULT.format(field=name.strip(),
                                                       fields="、".join(FIELDS)))
        if key in out:
            raise ImportError(T_DEFAULT_TWICE.format(field=HEADERS[key]))
        out[key] = value.strip()
    return out


def checked_defaults(defaults: dict[str, str], rules: Rules) -> dict[str, CellValue]:
    """The defaults as cells, each refused at once when no row could use it."""
    lookup = {clean_header(a): c.field for c in COLUMNS for a in (c.field, *c.aliases)}
    out: dict[str, CellValue] = {}
    for name, value in defaults.items():
        key = lookup.get(clean_header(name))
        if key is None:
            raise ImportError(T_UNKNOWN_DEFAULT.format(field=name, fields="、".join(FIELDS)))
        probe = check_row(TableRow(0, {key: value}), rules)
        problems = [reason for f, reason in probe.refusals if f == key]
        if problems:
            raise ImportError(T_BAD_DEFAULT.format(field=name, value=value,
                                                   reason=problems[0]))
        out[key] = value
    return out


# --- duplicates ------------------------------------------------------------------------


async def find_existing(
    session: AsyncSession, rows: Sequence[CheckedRow]
) -> dict[int, tuple[str, int]]:
    """Row number → (kind, id) of the record each row duplicates: a known external_id,
    else the best stored customer or lead that is a strong or similar match of the row
    (handlers.matching: two of company, phone and e-mail agree, or mobile, company and
    contact). A customer outranks a lead: that contact is already someone's account; a
    converted lead is reported as its customer."""
    found: dict[int, tuple[str, int]] = {}
    external = {r.lead["external_id"]: r.number for r in rows if r.lead.get("external_id")}
    if external:
        known = await session.execute(select(Lead.external_id, Lead.id)
                                      .where(Lead.external_id.in_(list(external))))
        for external_id, lead_id in known.all():
            found[external[external_id]] = ("external_id", lead_id)
    probes = {r.number: r.match for r in rows if r.number not in found}
    phones = {keys.phone for keys in probes.values() if keys.phone}
    emails = {keys.email for keys in probes.values() if keys.email}
    if not phones and not emails:
        return found
    index = KeyIndex()
    stored = await stored_by_keys(session, phones, emails)
    for record in sorted(stored, key=lambda r: (r.kind != "customer", r.id)):
        if record.status != "draft":  # a chat draft is not a lead until its tags are in
            index.add(record, record.keys)
    for number, probe in probes.items():
        matches = index.matches(probe)
        if not matches:
            continue
        record, _verdict = min(matches, key=lambda m: (
            not m[1].strong, m[0].kind != "customer" and m[0].customer_id is None,
            -m[1].score, m[0].id))
        if record.customer_id is not None:  # a converted lead, a merged-away customer
            found[number] = ("customer", record.customer_id)
        else:
            found[number] = (record.kind, record.id)
    return found


def _reason(duplicate: dict[str, Any]) -> str:
    template = {"in_file": T_DUP_IN_FILE, "lead": T_DUP_LEAD, "customer": T_DUP_CUSTOMER,
                "external_id": T_DUP_EXTERNAL}[duplicate["kind"]]
    return template.format(of=duplicate["of"])


# --- check -----------------------------------------------------------------------------


def _required(defaults: dict[str, Any]) -> list[str | tuple[str, ...]]:
    return ["company", "contact", ("phone", "landline"),
            *(tag for tag in TAGS if tag not in defaults)]


async def _rules(rt: Runtime, options: ImportOptions) -> Rules:
    async with rt.sessions() as session:
        members = (await session.execute(select(Member.id, Member.name, Member.role,
                                                Member.status))).all()
    owners: dict[str, tuple[int | None, str | None]] = {}
    for member_id, name, role, status in members:
        if role == "rep" and status != "left":
            owners[name] = (member_id, None)
        else:
            owners[name] = (None, T_OWNER_NOT_REP.format(name=name))
    settings, zone = rt.settings.leads, rt.settings.zone
    latest = latest_date(rt.now(), zone)
    rules = Rules(settings.industries, settings.sources, zone, owners=owners, latest=latest)
    defaults = checked_defaults(options.defaults, rules)
    return Rules(settings.industries, settings.sources, zone, defaults, owners, latest)


async def _yield_writer(rt: Runtime, held_since: float) -> None:
    """Leave SQLite's write lock free for a moment after holding it.

    Another process (`salesbot serve`) may be waiting for the lock to record a callback;
    it polls every few milliseconds (storage.db), so a pause of a quarter of the time
    held (5 to 50 ms) lets it in without halving the import's pace.
    """
    if rt.is_sqlite:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(min(0.05, max(0.005, (loop.time() - held_since) / 4)))


def _check_chunk(rows: list[TableRow], rules: Rules) -> list[CheckedRow]:
    return [check_row(row, rules) for row in rows]


async def check_import(
    rt: Runtime, data: bytes, filename: str, options: ImportOptions, *,
    actor: Member | None, origin: str, progress: Progress | None = None,
) -> ImportReport:
    """Read and check every row, find duplicates, and stage the rows as a "checked" import.

    Nothing is written to the leads; raises ImportError when the file cannot be read.
    """
    rules = await _rules(rt, options)
    try:
        # Parsing a workbook is CPU work: keep it off the event loop.
        table = await asyncio.to_thread(read_table, data, filename, COLUMNS,
                                        required=_required(rules.defaults), sheet=options.sheet)
    except TableError as exc:
        raise ImportError(str(exc)) from None
    now = rt.now()
    async with rt.sessions() as session, session.begin():
        record = LeadImport(actor_id=actor.id if actor else None, filename=filename[:255],
                            origin=origin, state="checking", options=asdict(options),
                            summary={}, created_at=now, updated_at=now)
        session.add(record)
        await session.flush()
        import_id = record.id
    async with rt.sessions() as session, session.begin():
        # With the whole door held no post is half-written: every later lead has a
        # higher id, and the publish's late check sees it.
        await lock_door(session, whole=True)
        watermark = await session.scalar(select(func.max(Lead.id))) or 0
    report = ImportReport(import_id, 0, 0, [], [], [
        *({"row": table.header_row, "field": title, "message": T_IGNORED_COLUMN}
          for title in table.ignored),
        *({"row": table.header_row, "field": title, "message": T_REPEATED_COLUMN}
          for title in table.repeated),
        *([{"row": table.stopped_at, "field": None,
            "message": T_STOPPED.format(n=f"{BLANK_RUN:,}")}] if table.stopped_at else [])])
    header_warnings = list(report.warnings)
    in_file = InFile()
    total = len(table.rows)
    for start in range(0, total, CHUNK):
        chunk = await asyncio.to_thread(_check_chunk, table.rows[start:start + CHUNK], rules)
        candidates = [row for row in chunk if not row.refusals]
        async with rt.sessions() as session:
            existing = await find_existing(session, candidates)
        staged = [_stage(import_id, row, existing, in_file, report) for row in chunk]
        for at in range(0, len(staged), WRITE_CHUNK):
            began = asyncio.get_running_loop().time()
            async with rt.sessions() as session, session.begin():
                # Core executemany: the ORM's bulk path would ask for every new id back.
                await session.execute(LeadImportRow.__table__.insert(),
                                      staged[at:at + WRITE_CHUNK])
                # The lease: a check that stops moving (its process killed) is purged.
                await session.execute(update(LeadImport).where(LeadImport.id == import_id)
                                      .values(updated_at=rt.now()))
            await _yield_writer(rt, began)
        if progress is not None:
            await progress(min(start + CHUNK, total), total)
    summary = {"rows": total, "accepted": report.accepted, "written": 0,
               "lead_watermark": watermark,
               "rejected": len({r["row"] for r in report.rejected}),
               "duplicates": len(report.duplicates), "warnings": len(report.warnings),
               "header_warnings": header_warnings}
    async with rt.sessions() as session, session.begin():
        done = await session.execute(
            update(LeadImport).where(LeadImport.id == import_id, LeadImport.state == "checking")
            .values(state="checked", summary=summary, updated_at=rt.now()))
    if not done.rowcount:  # purged as abandoned meanwhile (its lease ran out)
        raise ImportError(T_CHECK_DROPPED.format(id=import_id))
    log.info("lead import %s checked: %d rows, %d accepted, %d rejected, %d duplicates",
             import_id, total, report.accepted, summary["rejected"], summary["duplicates"])
    return report


@dataclass(slots=True)
class InFile:
    """The valid rows so far: their external ids and their match keys, so that a row that
    is an earlier row again is a duplicate of it (rows are staged in file order)."""

    external_ids: dict[str, int] = field(default_factory=dict)
    keys: KeyIndex = field(default_factory=KeyIndex)

    def earlier(self, row: CheckedRow) -> int | None:
        rows = [self.external_ids[e] for e in [row.lead.get("external_id")] if e
                and e in self.external_ids]
        rows += [number for number, _verdict in self.keys.matches(row.match)]
        return min(rows, default=None)

    def add(self, row: CheckedRow) -> None:
        if row.lead.get("external_id"):
            self.external_ids.setdefault(row.lead["external_id"], row.number)
        self.keys.add(row.number, row.match)


def _stage(
    import_id: int, row: CheckedRow, existing: dict[int, tuple[str, int]],
    in_file: InFile, report: ImportReport,
) -> dict[str, Any]:
    """The staging row for one checked row; the report gets its refusals, duplicate and
    warnings."""
    problem: dict[str, Any] = {}
    if row.refusals:
        status = "rejected"
        problem["rejected"] = [{"field": f, "reason": r} for f, r in row.refusals]
        report.rejected.extend({"row": row.number, "field": f, "reason": r}
                               for f, r in row.refusals)
    else:
        duplicate: dict[str, Any] | None = None
        if row.number in existing:
            kind, of = existing[row.number]
            duplicate = {"row": row.number, "of": of, "kind": kind}
        elif (earlier := in_file.earlier(row)) is not None:
            duplicate = {"row": row.number, "of": earlier, "kind": "in_file"}
        if duplicate is not None:
            status = "duplicate"
            problem["duplicate"] = {"of": duplicate["of"], "kind": duplicate["kind"]}
            report.duplicates.append(duplicate)
        else:
            status = "valid"
            report.accepted += 1
            in_file.add(row)
    if row.warnings:
        problem["warnings"] = [{"field": f, "message": m} for f, m in row.warnings]
        report.warnings.extend({"row": row.number, "field": f, "message": m}
                               for f, m in row.warnings)
    return {"import_id": import_id, "row_number": row.number, "status": status,
            "problem": problem or None, "raw": row.raw if status != "valid" else None,
            **row.lead, **row.match.columns()}


# --- the stored report -------------------------------------------------------------------


async def _rows(rt: Runtime, import_id: int, statuses: Sequence[str]) -> list[LeadImportRow]:
    async with rt.sessions() as session:
        return list((await session.scalars(
            select(LeadImportRow)
            .where(LeadImportRow.import_id == import_id, LeadImportRow.status.in_(statuses))
            .order_by(LeadImportRow.row_number))).all())


async def load_report(rt: Runtime, import_id: int) -> ImportReport:
    """The import's report from its stored rows (as check_import or publish returned it)."""
    async with rt.sessions() as session:
        record = await session.get(LeadImport, import_id)
        if record is None:
            raise ImportError(T_NO_IMPORT.format(id=import_id))
        accepted = await session.scalar(
            select(func.count()).select_from(LeadImportRow)
            .where(LeadImportRow.import_id == import_id, LeadImportRow.status == "valid"))
        noted = (await session.execute(
            select(LeadImportRow.row_number, LeadImportRow.problem)
            .where(LeadImportRow.import_id == import_id)
            # A valid row without warnings holds JSON null: compared as text, it is passed
            # over without decoding 50,000 of them.
            .where((LeadImportRow.status != "valid")
                   | (func.coalesce(cast(LeadImportRow.problem, Text), "null") != "null"))
            .order_by(LeadImportRow.row_number))).all()
    summary = record.summary or {}
    report = ImportReport(import_id, int(accepted or 0), int(summary.get("written", 0)),
                          [], [], list(summary.get("header_warnings", [])), record.state)
    for number, problem in noted:
        problem = problem or {}  # JSON null on a valid row without warnings
        for item in problem.get("rejected", []):
            report.rejected.append({"row": number, **item})
        if "duplicate" in problem:
            report.duplicates.append({"row": number, **problem["duplicate"]})
        for item in problem.get("warnings", []):
            report.warnings.append({"row": number, **item})
    return report


async def stored_rejected_rows(rt: Runtime, import_id: int) -> list[LeadImportRow]:
    """The import's rejected and duplicate rows, in file order."""
    return await _rows(rt, import_id, ("rejected", "duplicate"))


def _row_reason(row: LeadImportRow) -> str:
    problem = row.problem or {}
    parts = [f"{HEADERS.get(p['field'], p['field'])}：{p['reason']}"
             for p in problem.get("rejected", [])]
    if "duplicate" in problem:
        parts.append(_reason(problem["duplicate"]))
    return "；".join(parts)


def rejected_rows_xlsx(rows: list[LeadImportRow]) -> bytes:
    """The rows sent back: their original cells, the row number and a 原因 column."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    present = [f for f in FIELDS if any(f in (r.raw or {}) for r in rows)] or list(FIELDS[:3])
    book = Workbook(write_only=True)
    sheet = book.create_sheet("未导入")

    def text(value: str | None) -> WriteOnlyCell:
        # As text, always: a cell reading "=HYPERLINK(…)" in the file comes back as those
        # characters, never as a live formula.
        cell = WriteOnlyCell(sheet, value=value)
        if value is not None:
            cell.data_type = "s"
        return cell

    sheet.append([T_ROW, *(HEADERS[f] for f in present), T_REASON])
    for row in rows:
        raw = row.raw or _raw_from_staged(row)
        sheet.append([row.row_number, *(text(raw.get(f)) for f in present),
                      text(_row_reason(row))])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _raw_from_staged(row: LeadImportRow) -> dict[str, str | None]:
    """A row found duplicate at publish kept only its checked values."""
    values = {f: getattr(row, f, None) for f in FIELDS if hasattr(row, f)}
    return {k: None if v is None else str(v) for k, v in values.items()}


def template_bytes(ext: str) -> bytes:
    """The import template: one header row of the Chinese column names."""
    header = [HEADERS[f] for f in FIELDS]
    if ext.lstrip(".").lower() == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(header)
        return out.getvalue().encode("utf-8-sig")  # Excel opens UTF-8 only with the BOM
    if ext.lstrip(".").lower() != "xlsx":
        raise ImportError(T_TEMPLATE_EXT)
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "线索"
    sheet.append(header)
    for index, name in enumerate(FIELDS, start=1):
        letter = sheet.cell(1, index).column_letter
        sheet.column_dimensions[letter].width = 16
        if name in ("phone", "landline", "external_id"):
            # Text cells: Excel keeps the leading 0 and all digits of what is typed.
            for number in range(2, 1002):
                sheet.cell(number, index).number_format = "@"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --- publish -----------------------------------------------------------------------------

_LEAD_COLUMNS = ("company", "contact", "phone", "landline", "email", "industry", "urgency",
                 "source", "note", "employees", "first_contact_at", "external_id",
                 "phone_key", "email_key", "company_full", "company_core", "contact_key")


async def publish_import(
    rt: Runtime, import_id: int, *, actor: Member | None, skip_invalid: bool | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Write every valid row of a checked import as leads in one transaction, then hand
    them out: owners' rows accepted by the owner, the rest through the engine, each rep
    told once. With rejected rows and no skip_invalid nothing is written."""
    from handlers.assignment import IMPORT_LEASE

    now = rt.now()
    async with rt.sessions() as session, session.begin():
        record = await session.get(LeadImport, import_id, with_for_update=True)
        if record is None:
            raise ImportError(T_NO_IMPORT.format(id=import_id))
        if record.state == "cancelled":
            raise ImportError(T_CANCELLED.format(id=import_id))
        resume = record.state == "writing" and record.updated_at < now - IMPORT_LEASE
        if record.state == "checked":
            skip = record.options.get("skip_invalid", False) if skip_invalid is None \
                else skip_invalid
            rejected = await session.scalar(
                select(func.count()).select_from(LeadImportRow)
                .where(LeadImportRow.import_id == import_id,
                       LeadImportRow.status == "rejected"))
            if rejected and not skip:
                written = None
            else:
                written = await _publish(session, rt, record, actor, now)
                resume = True
        else:
            written = None
    if resume:
        await _hand_out(rt, import_id, actor, progress)
    report = await load_report(rt, import_id)
    if written is not None:
        log.info("lead import %s published: %d leads", import_id, written)
    return report


async def resume_imports(rt: Runtime) -> int:
    """Finish the hand-out of imports a crash interrupted (their lease ran out): the leads
    were written; they still go out by digest, never as a card each. For the sweep."""
    from handlers.assignment import IMPORT_LEASE

    async with rt.sessions() as session:
        stalled = (await session.scalars(
            select(LeadImport.id).where(LeadImport.state == "writing",
                                        LeadImport.updated_at < rt.now() - IMPORT_LEASE)
        )).all()
    from handlers.import_chat import resumed

    for import_id in stalled:
        log.warning("lead import %s: resuming the hand-out a crash interrupted", import_id)
        report = await publish_import(rt, import_id, actor=None)
        await resumed(rt, import_id, report.written)
    return len(stalled)


async def _publish(
    session: AsyncSession, rt: Runtime, record: LeadImport, actor: Member | None,
    now: datetime,
) -> int:
    """The one short write: late duplicates marked, the valid rows copied into leads."""
    await lock_door(session, whole=True)  # a concurrent import or post is committed first
    await _late_duplicates(session, record.id, int(record.summary.get("lead_watermark", 0)))
    owned = LeadImportRow.owner_id.is_not(None)
    columns = [getattr(LeadImportRow, c) for c in _LEAD_COLUMNS]
    written = 0
    # Owners' rows and the others apart: the status is a constant in each INSERT.
    for group, status, assigned in ((owned, "accepted", now), (~owned, "new", None)):
        query = select(
            *columns, LeadImportRow.owner_id, literal(status), literal("import"),
            literal(actor.id if actor else None, type_=Lead.created_by_id.type),
            literal(record.id), literal(now, type_=Lead.created_at.type),
            literal(now, type_=Lead.updated_at.type),
            literal(assigned, type_=Lead.assigned_at.type),
            literal(assigned, type_=Lead.accepted_at.type), literal(0), literal(0),
        ).where(LeadImportRow.import_id == record.id, LeadImportRow.status == "valid", group
                ).order_by(LeadImportRow.row_number)
        result = await session.execute(insert(Lead).from_select(
            [*_LEAD_COLUMNS, "assignee_id", "status", "origin", "created_by_id", "import_id",
             "created_at", "updated_at", "assigned_at", "accepted_at", "reroutes",
             "pool_returns"], query))
        written += result.rowcount or 0
    record.state = "writing"
    record.summary = {**record.summary, "written": written}
    record.updated_at = now
    audit(session, actor, "lead.import", "lead_import", record.id, None,
          {"written": written, "filename": record.filename}, now)
    return written


async def _late_duplicates(session: AsyncSession, import_id: int, watermark: int) -> None:
    """Leads stored since the check began (the API, the chat) may now match a row, or
    hold its external id: those rows become duplicates too, and the unique external_id
    holds."""
    c = Lead.__table__.c
    late = (await session.execute(
        select(c.id, c.external_id, c.phone_key, c.email_key, c.company_full,
               c.company_core, c.contact_key)
        .where(c.id > watermark).order_by(c.id))).all()
    if not late:
        return
    external = {row.external_id: row.id for row in late if row.external_id}
    index = KeyIndex()
    for row in late:
        index.add(row.id, MatchKeys(row.company_full, row.company_core, row.phone_key,
                                    row.email_key, row.contact_key))
    phones = [row.phone_key for row in late if row.phone_key]
    emails = [row.email_key for row in late if row.email_key]
    r = LeadImportRow
    staged = (await session.execute(
        select(r.id, r.external_id, r.phone_key, r.email_key, r.company_full,
               r.company_core, r.contact_key)
        .where(r.import_id == import_id, r.status == "valid",
               or_(r.phone_key.in_(phones), r.email_key.in_(emails),
                   r.external_id.in_(list(external))))
    )).all()
    for row in staged:
        if row.external_id in external:
            kind, of = "external_id", external[row.external_id]
        else:
            probe = MatchKeys(row.company_full, row.company_core, row.phone_key,
                              row.email_key, row.contact_key)
            matches = index.matches(probe)
            if not matches:
                continue
            kind, of = "lead", min(lead_id for lead_id, _verdict in matches)
        await session.execute(update(r).where(r.id == row.id).values(
            status="duplicate", problem={"duplicate": {"of": of, "kind": kind}}))


async def index_imports(rt: Runtime) -> int:
    """Write the company grams (/查客户 by part of a name) of the leads of published
    imports, for the sweep: an import's path ends with its digests, and the grams, the
    largest write of all (a row per two characters of every company), come after it in
    short transactions. Returns how many imports were indexed."""
    async with rt.sessions() as session:
        pending = (await session.scalars(
            select(LeadImport.id).where(LeadImport.state == "published",
                                        LeadImport.indexed_at.is_(None))
            .order_by(LeadImport.id))).all()
    for import_id in pending:
        await _index_keys(rt, import_id)
        async with rt.sessions() as session, session.begin():
            # updated_at stays: it says when the import was published (and leases).
            await session.execute(update(LeadImport).where(LeadImport.id == import_id)
                                  .values(indexed_at=rt.now(),
                                          updated_at=LeadImport.updated_at))
        log.info("lead import %s: company grams written", import_id)
    return len(pending)


async def _index_keys(rt: Runtime, import_id: int) -> None:
    """The published leads' company grams (their keys came from the staged rows), a short
    transaction per chunk; rows staged without keys (before revision 0006) are indexed
    whole. Idempotent: a resumed import carries on where it stopped."""
    from handlers.matching import index_rows
    from handlers.normalize import company_grams

    last = 0
    while True:
        began = asyncio.get_running_loop().time()
        async with rt.sessions() as session, session.begin():
            rows = (await session.execute(
                select(Lead.id, Lead.company_core, Lead.phone_key, Lead.email_key)
                .where(Lead.import_id == import_id, Lead.id > last)
                .order_by(Lead.id).limit(CHUNK))).all()
            if not rows:
                return
            last = rows[-1].id
            bare = {r.id for r in rows if not (r.company_core or r.phone_key or r.email_key)}
            if bare:
                await index_rows(session, "lead", bare)
            keyed = [r for r in rows if r.id not in bare]
            done = set((await session.scalars(
                select(MatchGram.object_id).where(MatchGram.kind == "lead",
                                                  MatchGram.object_id.in_([r.id for r in keyed]))
                .distinct())).all()) if keyed else set()
            grams = [{"kind": "lead", "object_id": r.id, "gram": gram} for r in keyed
                     if r.id not in done for gram in company_grams(r.company_core or "")]
            if grams:
                await session.execute(MatchGram.__table__.insert(), grams)
        await _yield_writer(rt, began)


async def _hand_out(
    rt: Runtime, import_id: int, actor: Member | None, progress: Progress | None
) -> None:
    """After the publish: status history, then the engine in short batches, then one
    digest per rep; the import is "published" at the end."""
    from bot.outbox import enqueue

    await _history(rt, import_id, actor)
    async with rt.sessions() as session:
        waiting = await session.scalar(select(func.count()).select_from(Lead).where(
            Lead.import_id == import_id, Lead.status == "new", Lead.assignee_id.is_(None)))
        team = await rep_states(session, rt)
    allowance = fair_allowance(team, int(waiting or 0), rt.now(), rt.settings.zone)
    told: dict[int, list[int]] = {}
    done, last_id = 0, 0
    while waiting:
        began = asyncio.get_running_loop().time()
        async with rt.sessions() as session, session.begin():
            await session.execute(update(LeadImport).where(LeadImport.id == import_id)
                                  .values(updated_at=rt.now()))  # the lease: still at work
            query = (select(Lead).where(Lead.import_id == import_id, Lead.status == "new",
                                        Lead.assignee_id.is_(None), Lead.id > last_id)
                     .order_by(Lead.id).limit(ROUTE_CHUNK))
            if not rt.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            leads = list((await session.scalars(query)).all())
            if not leads:
                break
            reps = await route_leads(session, rt, leads, rt.now(), allowance=allowance,
                                     card=False)
        await _yield_writer(rt, began)
        last_id = leads[-1].id
        for lead, rep in zip(leads, reps, strict=True):
            if rep is not None:
                told.setdefault(rep.id, []).append(lead.id)
        done += len(leads)
        if progress is not None:
            await progress(done, int(waiting))
        if all(rep is None for rep in reps):
            break  # nobody can take more: the rest wait in the queue
    async with rt.sessions() as session, session.begin():
        # Everyone this import offered leads to, read back: after a crash the hand-out
        # resumes, and those offered before it are told too (the dedupe key holds once).
        told = {}
        for member_id, lead_id in (await session.execute(
                select(Lead.assignee_id, Lead.id)
                .where(Lead.import_id == import_id, Lead.status == "assigned")
                .order_by(Lead.id))).all():
            told.setdefault(member_id, []).append(lead_id)
        # The owners named in the file: their leads began as accepted (_history).
        owned: dict[int, list[int]] = {}
        for member_id, lead_id in (await session.execute(
                select(Lead.assignee_id, Lead.id)
                .join(LeadStatusChange, LeadStatusChange.lead_id == Lead.id)
                .where(Lead.import_id == import_id, LeadStatusChange.from_status.is_(None),
                       LeadStatusChange.to_status == "accepted")
                .order_by(Lead.id))).all():
            owned.setdefault(member_id, []).append(lead_id)
        wanted = list(told) + list(owned)
        members = {m.id: m for m in (await session.scalars(
            select(Member).where(Member.id.in_(wanted)))).all()} if wanted else {}
        # One message a rep: the leads offered, and the leads named as theirs.
        for member_id in dict.fromkeys(wanted):
            parts = [text.format(n=len(groups[member_id]), ids=_some_ids(groups[member_id]))
                     for text, groups in ((T_DIGEST, told), (T_OWNER_DIGEST, owned))
                     if member_id in groups]
            await enqueue(session, rt, members[member_id], "\n".join(parts),
                          dedupe_key=f"import-digest:{import_id}:{member_id}")
        await session.execute(update(LeadImport).where(LeadImport.id == import_id)
                              .values(state="published", updated_at=rt.now()))
    if (told or owned) and getattr(rt, "outbox", None) is not None:
        rt.outbox.wake()


def _some_ids(ids: list[int]) -> str:
    """"#12、#13、#14…": the first DIGEST_IDS lead numbers of a digest."""
    return "、".join(f"#{i}" for i in ids[:DIGEST_IDS]) + ("…" if len(ids) > DIGEST_IDS else "")


async def _history(rt: Runtime, import_id: int, actor: Member | None) -> None:
    """Each imported lead's first status, and the owners' acceptances audited, in chunks
    (resumable: a lead that has its history is passed over)."""
    now = rt.now()
    last_id = 0
    while True:
        await _yield_writer(rt, asyncio.get_running_loop().time())
        async with rt.sessions() as session, session.begin():
            rows = (await session.execute(
                select(Lead.id, Lead.status, Lead.assignee_id)
                .where(Lead.import_id == import_id, Lead.id > last_id,
                       ~select(LeadStatusChange.id).where(LeadStatusChange.lead_id == Lead.id)
                       .exists())
                .order_by(Lead.id).limit(WRITE_CHUNK))).all()
            if not rows:
                return
            actor_id = actor.id if actor else None
            await session.execute(LeadStatusChange.__table__.insert(), [
                {"lead_id": lead_id, "from_status": None, "to_status": status,
                 "actor_id": actor_id, "at": now,
                 "reason": T_OWNER_REASON if assignee else T_IMPORTED}
                for lead_id, status, assignee in rows])
            owned = [(lead_id, assignee) for lead_id, _s, assignee in rows if assignee]
            if owned:
                await session.execute(AuditLog.__table__.insert(), [
                    {"actor_id": actor_id, "actor": actor.name if actor else "system",
                     "action": "lead.accept", "object_type": "lead", "object_id": str(lead_id),
                     "before": None, "after": {"assignee_id": assignee, "import_id": import_id},
                     "at": now} for lead_id, assignee in owned])
            last_id = rows[-1][0]


async def cancel_import(rt: Runtime, import_id: int, *, actor: Member | None) -> None:
    """A checked import is dropped: its valid staged rows are deleted at once (they hold
    personal data nobody will publish); the problem rows stay for the report download
    until purge_imports. A published import cannot be cancelled; nothing happens."""
    async with rt.sessions() as session, session.begin():
        record = await session.get(LeadImport, import_id, with_for_update=True)
        if record is None:
            raise ImportError(T_NO_IMPORT.format(id=import_id))
        if record.state not in ("checking", "checked"):
            return
        # A Core UPDATE: the ORM would put the wall clock in updated_at when rt.now()
        # equals the value already there (an unchanged attribute leaves room for onupdate).
        await session.execute(update(LeadImport).where(LeadImport.id == import_id)
                              .values(state="cancelled", updated_at=rt.now()))
        audit(session, actor, "lead.import_cancel", "lead_import", import_id, None, None,
              rt.now())
    await _delete_staged(rt, import_id, ("valid",))


async def _delete_staged(rt: Runtime, import_id: int, statuses: Sequence[str] | None) -> None:
    """Delete an import's staged rows (of these statuses) a chunk per short transaction."""
    while True:
        await _yield_writer(rt, asyncio.get_running_loop().time())
        async with rt.sessions() as session, session.begin():
            query = select(LeadImportRow.id).where(LeadImportRow.import_id == import_id)
            if statuses is not None:
                query = query.where(LeadImportRow.status.in_(statuses))
            ids = (await session.scalars(query.limit(CHUNK))).all()
            if not ids:
                return
            await session.execute(delete(LeadImportRow).where(LeadImportRow.id.in_(ids)))


async def purge_imports(rt: Runtime) -> int:
    """Staged rows do not outlive their use. A check that stopped moving for IMPORT_LEASE
    (its process was killed mid-way) is dropped with its staged rows, and a chat importer
    told; a check nobody confirmed or cancelled within CHECKED_KEEP is cancelled and its
    card closed; an import finished PROBLEMS_KEEP ago (the lifetime of the problem-rows
    link) loses its staged rows, a command line import as soon as its leads are indexed.
    For the sweep; returns imports purged."""
    from handlers.assignment import IMPORT_LEASE
    from handlers.import_chat import check_interrupted, expired

    now = rt.now()
    async with rt.sessions() as session:
        stalled = (await session.scalars(
            select(LeadImport.id).where(LeadImport.state == "checking",
                                        LeadImport.updated_at < now - IMPORT_LEASE)
            .order_by(LeadImport.id).limit(20))).all()
        abandoned = (await session.scalars(
            select(LeadImport.id).where(LeadImport.state == "checked",
                                        LeadImport.updated_at < now - CHECKED_KEEP)
            .order_by(LeadImport.id).limit(20))).all()
        staged = select(LeadImportRow.id).where(LeadImportRow.import_id == LeadImport.id)
        # A command line import has no problem-rows link: its rows go once the grams
        # of its leads are written.
        indexed_cli = and_(LeadImport.origin == "cli", LeadImport.state == "published",
                           LeadImport.indexed_at.is_not(None))
        finished = (await session.scalars(
            select(LeadImport.id)
            .where(LeadImport.state.in_(("published", "cancelled", "failed")),
                   or_(LeadImport.updated_at < now - PROBLEMS_KEEP, indexed_cli),
                   staged.exists())
            .order_by(LeadImport.id).limit(20))).all()
    for import_id in stalled:
        async with rt.sessions() as session, session.begin():
            dropped = await session.execute(
                update(LeadImport)
                .where(LeadImport.id == import_id, LeadImport.state == "checking",
                       LeadImport.updated_at < now - IMPORT_LEASE)
                .values(state="failed", error=T_INTERRUPTED, updated_at=now))
        if not dropped.rowcount:
            continue  # it moved after all
        log.warning("lead import %s: its check stopped moving %s ago; dropped", import_id,
                    IMPORT_LEASE)
        await _delete_staged(rt, import_id, None)  # no report: nobody saw the check end
        await check_interrupted(rt, import_id)
    for import_id in abandoned:
        log.info("lead import %s: checked %s ago and never confirmed; cancelled",
                 import_id, CHECKED_KEEP)
        await cancel_import(rt, import_id, actor=None)
        await expired(rt, import_id, int(CHECKED_KEEP.total_seconds() // 3600))
    for import_id in finished:
        await _delete_staged(rt, import_id, None)
    return len(stalled) + len(abandoned) + len(finished)


# --- the command line --------------------------------------------------------------------


def cli_failure(message: str, *, as_json: bool) -> int:
    """Exit 2: the file or the options cannot be used. The message goes to stderr; --json
    still ends with its object, the contract's keys only."""
    print(message if message.startswith(CLI_PREFIX) else CLI_PREFIX + message,
          file=sys.stderr)
    if as_json:
        print(json.dumps(ImportReport(None, 0, 0, [], [], []).as_json(), ensure_ascii=False))
    return 2


async def import_leads_cli(
    settings: Settings, path: Path, options: ImportOptions, *, dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """`salesbot leads import FILE`: 0 all valid (and written), 1 rows rejected, 2 unreadable."""
    from bot.app import build_runtime

    def fail(message: str) -> int:
        return cli_failure(message, as_json=as_json)

    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return fail(T_CLI_NOT_FOUND.format(path=path))
    except OSError as exc:
        return fail(T_CLI_UNREADABLE.format(why=exc.strerror or type(exc).__name__))
    # The channels are built, not started: they tell who is reachable, and the running
    # server's outbox delivers the digests.
    rt = build_runtime(settings)
    try:
        checking = ProgressLine(T_CLI_PROGRESS)
        try:
            report = await check_import(rt, data, Path(path).name, options, actor=None,
                                        origin="cli", progress=checking)
        except ImportError as exc:
            return fail(str(exc))
        finally:
            checking.end()
        assert report.import_id is not None
        if not dry_run:
            handing_out = ProgressLine(T_CLI_PUBLISH_PROGRESS)
            try:
                report = await publish_import(rt, report.import_id, actor=None,
                                              skip_invalid=options.skip_invalid,
                                              progress=handing_out)
            finally:
                handing_out.end()
        if report.state == "checked":
            await cancel_import(rt, report.import_id, actor=None)
        if report.state == "checked" or not report.written:
            # A dry run, rows refused, or every row a duplicate: nothing is written, the
            # report is printed here and no link points at the staged rows, so none keeps
            # its names and phones (a chat import keeps its problem rows for the
            # download). A published import's rows go with the sweep, not in the time of
            # this command.
            await _delete_staged(rt, report.import_id, None)
    finally:
        await rt.close()
    _print_report(report, dry_run)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
    return 1 if report.rejected else 0


class ProgressLine:
    """The command line's progress on stderr: one line redrawn in place on a terminal,
    else a plain line each CLI_PROGRESS_STEP rows; nothing for a file checked in one
    step."""

    def __init__(self, text: str, stream: Any = None) -> None:
        self.text = text
        self.stream = stream if stream is not None else sys.stderr
        self.redraw = self.stream.isatty()
        self.next_at = CLI_PROGRESS_STEP
        self.drawn = False

    async def __call__(self, done: int, total: int) -> None:
        if total <= CHUNK:
            return
        line = self.text.format(done=done, total=total)
        if self.redraw:
            print("\r" + line, end="", file=self.stream, flush=True)
            self.drawn = True
        elif done >= self.next_at or done >= total:
            print(line, file=self.stream, flush=True)
            self.next_at = (done // CLI_PROGRESS_STEP + 1) * CLI_PROGRESS_STEP

    def end(self) -> None:
        """Ends a line drawn in place, so what follows starts on its own."""
        if self.drawn:
            print(file=self.stream, flush=True)
            self.drawn = False


def _print_report(report: ImportReport, dry_run: bool) -> None:
    for item in report.rejected:
        print(T_CLI_ROW.format(row=item["row"], field=HEADERS.get(item["field"], item["field"]),
                               reason=item["reason"]), file=sys.stderr)
    for item in report.duplicates:
        print(T_CLI_DUP.format(row=item["row"], reason=_reason(item)), file=sys.stderr)
    for item in report.warnings:
        if item["field"] is None:  # about the file, not a column
            print(T_CLI_WARN_BARE.format(row=item["row"], message=item["message"]),
                  file=sys.stderr)
            continue
        print(T_CLI_WARN.format(row=item["row"], field=HEADERS.get(item["field"],
                                                                   item["field"]),
                                message=item["message"]), file=sys.stderr)
    rows = len({r["row"] for r in report.rejected})
    print(T_CLI_SUMMARY.format(rows=report.accepted + rows + len(report.duplicates),
                               accepted=report.accepted, rejected=rows,
                               duplicates=len(report.duplicates),
                               warnings=len(report.warnings)))
    if dry_run:
        print(T_CLI_DRY)
    elif report.written:
        print(T_CLI_WRITTEN.format(n=report.written, id=report.import_id))
    elif report.rejected:
        print(T_CLI_REFUSED, file=sys.stderr)


def template_cli(path: Path) -> int:
    """`salesbot leads template FILE`: the template, xlsx or csv by the file's extension."""
    try:
        data = template_bytes(Path(path).suffix)
    except ImportError as exc:
        return cli_failure(str(exc), as_json=False)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return cli_failure(T_CLI_UNWRITABLE.format(path=path, why=why), as_json=False)
    print(T_CLI_TEMPLATE.format(path=path))
    return 0
