"""Importing leads from spreadsheets: every row checked and staged, then all or nothing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select, update

import handlers.lead_import as lead_import
from bot.runtime import Runtime
from handlers import tabular
from handlers.intake import LeadInput, create_lead
from handlers.lead_import import (
    ImportError,
    ImportOptions,
    Rules,
    check_import,
    check_row,
    load_report,
    parse_date,
    publish_import,
    rejected_rows_xlsx,
    stored_rejected_rows,
    template_bytes,
)
from handlers.tabular import CellError, TableRow, read_table
from storage.models import (
    Customer,
    Lead,
    LeadImport,
    LeadImportRow,
    LeadStatusChange,
    Member,
    Outgoing,
)
from tests.harness import WORKDAY_MORNING, FrozenClock
from tests.test_tabular import note_sheet, with_empty_rows

SHANGHAI = ZoneInfo("Asia/Shanghai")
SALESBOT = Path(sys.executable).with_name("salesbot")
HEADER = ["客户名称", "联系人", "手机", "行业", "紧急程度", "来源"]
TAGS = ["工业", "高", "展会"]


def row(company, phone, contact="张三", tags=TAGS):
    return [company, contact, phone, *tags]


def csv_bytes(rows, header=HEADER, delimiter=",", encoding="utf-8") -> bytes:
    lines = [delimiter.join(header)] + [delimiter.join("" if c is None else str(c) for c in r)
                                        for r in rows]
    return ("\n".join(lines) + "\n").encode(encoding)


def xlsx_bytes(rows, header=HEADER, merges=(), sheets=None) -> bytes:
    book = Workbook()
    if sheets:
        for title, (sheet_header, sheet_rows) in sheets.items():
            ws = book.create_sheet(title)
            ws.append(sheet_header)
            for r in sheet_rows:
                ws.append(r)
    ws = book.active
    ws.title = "线索"
    ws.append(header)
    for r in rows:
        ws.append(r)
    for merged in merges:
        ws.merge_cells(merged)
    if sheets:
        book.move_sheet("线索", offset=len(sheets))  # the leads are not the first sheet
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.fixture
async def rt(settings):
    runtime = Runtime(settings)
    yield runtime
    await runtime.close()


async def add_members(rt, *rows) -> dict[str, Member]:
    async with rt.sessions() as session, session.begin():
        members = [Member(**({"role": "rep", "status": "active", "industries": []} | r))
                   for r in rows]
        session.add_all(members)
    return {m.name: m for m in members}


async def leads(rt) -> list[Lead]:
    async with rt.sessions() as session:
        return list((await session.scalars(select(Lead).order_by(Lead.id))).all())


async def check(rt, data, filename="leads.csv", **options) -> lead_import.ImportReport:
    return await check_import(rt, data, filename, ImportOptions(**options), actor=None,
                              origin="cli")


def rules(**owners) -> Rules:
    return Rules({"industrial": "工业", "medical": "医疗", "education": "教育"},
                 {"expo": "展会", "sem": "SEM", "referral": "转介绍"}, SHANGHAI,
                 owners=owners)


def one(values, **kw) -> lead_import.CheckedRow:
    base = {"company": "深圳示例科技有限公司", "contact": "张三", "industry": "工业",
            "urgency": "高", "source": "展会"}
    return check_row(TableRow(2, base | values), rules(**kw))


# --- one row (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize("cell, day", [
    (45292, date(2024, 1, 1)), ("45292", date(2024, 1, 1)),
    (datetime(2024, 1, 2), date(2024, 1, 2)), ("2024/01/03", date(2024, 1, 3)),
    ("2024-1-3", date(2024, 1, 3)), ("2024年1月3日", date(2024, 1, 3)),
    ("20240103", date(2024, 1, 3)), (20240103, date(2024, 1, 3)),
    ("2024-01-03T23:30:00+00:00", date(2024, 1, 4)), ("2024-01-03T09:30:00Z", date(2024, 1, 3)),
])
def test_dates_as_text_cells_or_excel_serials_from_1899_12_30(cell, day):
    assert parse_date(cell, SHANGHAI).astimezone(SHANGHAI).date() == day


def test_a_date_time_keeps_its_time_in_the_team_timezone():
    assert parse_date("2024-01-03 09:30", SHANGHAI) == datetime(2024, 1, 3, 1, 30, tzinfo=UTC)


def test_an_iso_date_time_with_its_zone_is_that_instant():
    assert parse_date("2024-01-03T09:30:00+08:00", SHANGHAI) == \
        datetime(2024, 1, 3, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("cell", ["下周", "2024-13-01", "1850-01-01", True, "20241301"])
def test_a_date_that_is_not_one_is_refused(cell):
    with pytest.raises(CellError):
        parse_date(cell, SHANGHAI)


@pytest.mark.parametrize("cell", ["-", "—", "N/A", "无", None, "  "])
def test_placeholders_mean_empty_in_optional_text_fields(cell):
    checked = one({"phone": 13800000000, "note": cell, "email": cell, "landline": cell,
                   "first_contact": cell})
    assert checked.refusals == []
    assert [checked.lead[k] for k in ("note", "email", "landline", "first_contact_at")] == \
        [None] * 4


@pytest.mark.parametrize("cell, reason", [
    ("-", "应为不小于0的整数，不能是占位符“-”"), ("—", "应为不小于0的整数，不能是占位符“—”"),
    (-3, "应为不小于0的整数，不能是负数"), ("-3", "应为不小于0的整数，不能是负数"),
    (2.5, "应为整数，不能是小数"), ("十个", "应为不小于0的整数"),
])
def test_a_numeric_field_refuses_placeholders_negatives_and_fractions(cell, reason):
    assert one({"phone": 13800000000, "employees": cell}).refusals == [("employees", reason)]


@pytest.mark.parametrize("cell, number", [(None, None), (0, 0), ("12", 12), (30.0, 30)])
def test_a_numeric_field_takes_a_whole_number_or_nothing(cell, number):
    checked = one({"phone": 13800000000, "employees": cell})
    assert (checked.refusals, checked.lead["employees"]) == ([], number)


def test_a_phone_excel_stored_as_a_number_is_read_whole():
    assert one({"phone": 13800000000.0}).lead["phone"] == "13800000000"
    assert one({"phone": "13800000000.0"}).lead["phone"] == "13800000000"


def test_scientific_notation_text_has_lost_digits_and_is_refused():
    assert one({"phone": "1.38E+10"}).refusals == [("phone", "号码已被Excel科学计数法截断")]


def test_a_landline_that_lost_its_leading_zero_is_flagged_not_guessed():
    checked = one({"phone": 13800000000, "landline": 75512345678, "note": "展会名片"})
    assert checked.refusals == []
    assert checked.warnings == [("landline", "疑似丢失区号前导0")]
    assert checked.lead["landline"] is None
    # Not stored as a number, not lost either: the rep finds the digits on the lead.
    assert checked.lead["note"] == "展会名片\n座机（疑似丢失区号前导0，待核对）：75512345678"


def test_a_mobile_in_the_second_phone_column_is_the_phone_when_there_is_none():
    checked = one({"landline": "138 0000 1234"})
    assert (checked.refusals, checked.lead["phone"], checked.lead["landline"]) == \
        ([], "13800001234", None)


@pytest.mark.parametrize("cell", ["13700000023/13700000024", "13700000023、137-0000-0024",
                                  "13700000023 ; 0755-12345678"])
def test_several_numbers_in_one_cell_keep_the_first_and_note_the_rest(cell):
    checked = one({"phone": cell, "note": "展会第二天"})
    assert checked.refusals == []
    assert checked.lead["phone"] == "13700000023"
    other = "0755" + "12345678" if "0755" in cell else "13700000024"
    assert checked.lead["note"] == f"展会第二天\n另一个号码：{other}"
    assert checked.warnings == [("phone", "一格里有多个号码，第一个已使用，其余已记入备注")]
    # a list that is not all numbers is read whole, and refused with the reason
    assert one({"phone": "13700000023/分机"}).refusals == [
        ("phone", "号码含有无法识别的字符")]


def test_two_mobiles_in_one_row_keep_the_first_as_the_phone_and_the_second_in_the_note():
    # 手机 and 电话 side by side, both mobiles (电话 fills the landline column).
    table = read_table(csv_bytes([[*row("深圳示例科技有限公司", "13300001111"), "13300002222"]],
                                 [*HEADER, "电话"]), "a.csv", lead_import.COLUMNS)
    checked = check_row(table.rows[0], rules())
    assert checked.refusals == []
    assert (checked.lead["phone"], checked.lead["landline"]) == ("13300001111", None)
    assert checked.lead["note"] == "另一个手机号：13300002222"
    assert checked.warnings == [("landline", "第二个手机号，已记入备注")]
    # A bad first number still rejects the row: the second one is no landline either.
    assert one({"phone": "12345", "landline": "13800001234"}).refusals == [
        ("phone", "不是有效的手机号或带区号的座机号"),
        ("landline", "应为带区号的座机号，这是手机号")]


@pytest.mark.parametrize("cell, reason", [
    ("010-1234567", "不是有效的手机号或带区号的座机号"),  # Beijing numbers have 8 digits
    ("12345", "不是有效的手机号或带区号的座机号"),  # no mobile message for 5 digits
    ("1380000123", "手机号应为11位，这里是10位"),
    ("12800002011", "不是有效的手机号段（第二位应为3–9，这里是2）"),  # 11 digits, no mobile
    ("13800002010.00", "号码带有小数部分，应为整数"),  # not "13 digits"
])
def test_numbers_that_are_neither_mobile_nor_landline_say_why(cell, reason):
    assert one({"phone": cell}).refusals == [("phone", reason)]


def test_a_four_digit_area_code_takes_a_seven_digit_number():
    assert one({"landline": "0755-1234567"}).lead["landline"] == "07551234567"


@pytest.mark.parametrize("cell, digits", [
    (75512345678, "75512345678"), (2012345678, "2012345678"),
    (1012345678, "1012345678"),  # Beijing: 010-12345678, not a 10-digit mobile
    (1012345678.0, "1012345678"), ("1012345678", "1012345678"),
])
def test_a_landline_that_lost_its_zero_beside_a_mobile_is_a_warning(cell, digits):
    checked = one({"phone": 13800000000, "landline": cell})
    assert (checked.refusals, checked.warnings) == ([], [("landline", "疑似丢失区号前导0")])
    assert (checked.lead["phone"], checked.lead["landline"]) == ("13800000000", None)
    assert checked.lead["note"] == f"座机（疑似丢失区号前导0，待核对）：{digits}"


def test_a_service_number_of_ten_digits_is_no_lost_zero():
    checked = one({"phone": 13800000000, "landline": 4001234567})
    assert (checked.refusals, checked.warnings, checked.lead["landline"]) == \
        ([], [], "4001234567")


def test_a_lost_zero_landline_as_the_only_number_keeps_the_row_with_a_warning():
    # INTERFACE.md: a warning does not reject the row. Nothing is guessed: the lead has no
    # number to dial until the rep adds the 0, and the digits wait in its note.
    checked = one({"landline": 1012345678})
    assert checked.refusals == []
    assert checked.warnings == [("landline", "疑似丢失区号前导0，号码已记入备注待核对"
                                             "（这条线索暂无可拨打的电话）")]
    assert (checked.lead["phone"], checked.lead["landline"]) == (None, None)
    assert checked.lead["note"] == "座机（疑似丢失区号前导0，待核对）：1012345678"


@pytest.mark.parametrize("code", ["#VALUE!", "#REF!", "#N/A", "#DIV/0!", "#NAME?", "#NULL!",
                                  "#NUM!"])
def test_excel_error_values_are_refused_for_their_field_with_the_code(code):
    checked = one({"phone": code, "employees": f" {code} ", "note": code})
    reason = f"是 Excel 的错误值“{code}”（公式出错），请改成实际内容"
    assert checked.refusals == [("phone", reason), ("note", reason), ("employees", reason)]


async def test_a_formula_saved_without_its_result_is_refused_not_read_as_empty(rt):
    # openpyxl, like other programs, saves a formula without computing it; Excel never does
    header = ["客户名称", "联系人", "手机", "座机", "行业", "紧急程度", "来源", "备注"]
    rows = [["深圳示例科技有限公司", "张三", "=TEXT(13800000000,\"0\")", None, *TAGS,
             '=B2&"的备注"']]
    report = await check(rt, xlsx_bytes(rows, header), "leads.xlsx")
    reason = "是没有计算结果的公式，请用 Excel 打开、保存后再导入，或改成实际内容"
    assert report.rejected == [{"row": 2, "field": "phone", "reason": reason},
                               {"row": 2, "field": "note", "reason": reason}]


def test_a_company_of_only_a_zero_width_space_is_not_filled():
    assert one({"company": "\u200b", "phone": 13800000000}).refusals == [("company", "必填")]


@pytest.mark.parametrize("cell", ["2024-W01", "2024-W01-1", "2024-001"])
def test_iso_weeks_and_days_of_the_year_are_no_dates_people_write(cell):
    with pytest.raises(CellError, match="无法识别的日期"):
        parse_date(cell, SHANGHAI)


def test_a_first_contact_after_tomorrow_is_refused_as_in_the_future():
    now = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    latest = lead_import.latest_date(now, SHANGHAI)
    assert parse_date("2026-12-03 23:59", SHANGHAI, latest) is not None  # a day of slack
    for cell in ("2026-12-04", "2099-01-01", 73051):  # 73051 is 2099-12-31
        with pytest.raises(CellError, match="^日期不能晚于明天（2026-12-03）$"):
            parse_date(cell, SHANGHAI, latest)


def test_a_cell_of_megabytes_is_refused_and_its_problem_row_keeps_a_little_of_it():
    checked = one({"phone": 13800000000, "note": "a" * tabular.MAX_CELL_CHARS})
    assert checked.refusals == [("note", "不能超过2000个字符")]
    assert checked.raw["note"] == "a" * 2100 + "…"


def test_tags_in_chinese_or_english_and_unknown_ones_refused():
    checked = one({"phone": "13800000000", "industry": "Medical", "urgency": "LOW",
                   "source": "sem"})
    assert [checked.lead[k] for k in ("industry", "urgency", "source")] == \
        ["medical", "low", "sem"]
    refused = one({"phone": "13800000000", "industry": "金融", "urgency": "-"}).refusals
    assert refused == [("industry", "未知的取值“金融”（可选：工业/industrial、医疗/medical、"
                                    "教育/education）"), ("urgency", "必填")]


def test_required_fields_and_a_number():
    checked = check_row(TableRow(7, {"company": "—", "contact": None}), rules())
    assert checked.refusals == [("company", "必填"), ("contact", "必填"),
                                ("phone", "手机号和座机至少填写一个"), ("industry", "必填"),
                                ("urgency", "必填"), ("source", "必填")]


def test_the_owner_must_be_a_rep_on_the_roster():
    reps = {"王芳": (5, None), "李经理": (None, "“李经理”不是在职的销售，不能作为负责人")}
    assert one({"phone": 13800000000, "owner": "王芳"}, **reps).lead["owner_id"] == 5
    assert one({"phone": 13800000000, "owner": "李经理"}, **reps).refusals == [
        ("owner", "“李经理”不是在职的销售，不能作为负责人")]
    assert one({"phone": 13800000000, "owner": "赵六"}, **reps).refusals == [
        ("owner", "名单中没有“赵六”")]


# --- formats ---------------------------------------------------------------------------


async def test_c17_gbk_from_chinese_excel_and_utf8_with_bom_each_import_one_row(rt):
    text = ("客户名称,联系人,电话,行业,紧急程度,来源\n"
            "深圳示例科技有限公司,张三,13800000000,工业,高,展会\n")
    gbk = text.encode("gbk")
    assert gbk[:2] == b"\xbf\xcd"
    for data in (gbk, b"\xef\xbb\xbf" + text.encode("utf-8"), text.encode("gb18030")):
        report = await check(rt, data)
        assert (report.accepted, report.rejected, report.duplicates) == (1, [], [])


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
async def test_csv_delimiters_and_encodings_with_headers_in_any_order_and_spaces(
    rt, delimiter, encoding,
):
    header = [" 来源 ", "phone", "　公司名称", "联系人 ", "industry", "URGENCY", "无关列"]
    rows = [["expo", "13800001234", "深圳示例科技有限公司", "张三", "工业", "高", "x"],
            ["SEM", "13800001235", "广州样例贸易有限公司", "李四", "medical", "low", "y"]]
    report = await check(rt, csv_bytes(rows, header, delimiter, encoding))
    assert (report.accepted, report.rejected, report.duplicates) == (2, [], [])
    assert report.warnings == [{"row": 1, "field": "无关列", "message": "未知的列，已忽略"}]


async def test_the_xlsx_sheet_with_the_expected_header_is_read_or_the_one_named(rt):
    data = xlsx_bytes([row("深圳示例科技有限公司", 13800001234)],
                      sheets={"说明": (["请按模板填写"], [["第一行是表头"]])})
    report = await check(rt, data, "leads.xlsx")
    assert report.accepted == 1
    with pytest.raises(ImportError, match="找不到表头行"):
        await check(rt, data, "leads.xlsx", sheet="说明")
    with pytest.raises(ImportError, match="找不到工作表“其他”"):
        await check(rt, data, "leads.xlsx", sheet="其他")


@pytest.mark.parametrize("filename, data, message", [
    ("leads.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "不支持旧版 .xls 格式"),
    ("leads.json", b"[]", "不支持的文件格式“.json”"),
    ("leads.csv", "备注\n随便写写\n".encode(), "缺少必需的列：公司名称、联系人、手机号/座机"),
])
async def test_a_file_that_cannot_be_read_says_why_and_stores_nothing(rt, filename, data,
                                                                       message):
    with pytest.raises(ImportError, match=message):
        await check(rt, data, filename)
    async with rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LeadImport)) == 0


async def test_a_missing_tag_column_is_needed_unless_a_default_supplies_it(rt):
    header = ["客户名称", "联系人", "手机", "行业", "紧急程度"]
    data = csv_bytes([["深圳示例科技有限公司", "张三", "13800001234", "工业", ""]], header)
    with pytest.raises(ImportError, match="缺少必需的列：来源渠道"):
        await check(rt, data)
    report = await check(rt, data, defaults={"source": "展会", "urgency": "中"})
    assert (report.accepted, report.rejected) == (1, [])
    report = await publish_import(rt, report.import_id, actor=None)
    [lead] = await leads(rt)
    assert (lead.source, lead.urgency, lead.origin) == ("expo", "medium", "import")
    with pytest.raises(ImportError, match="--default source=网购 无效"):
        await check(rt, data, defaults={"source": "网购"})


async def test_c16_excel_numbers_placeholders_serial_dates_and_merged_cells(rt):
    reps = await add_members(rt, {"name": "张三"})
    header = ["客户名称", "联系人", "手机", "座机", "首次联系", "负责人", "行业", "紧急程度",
              "来源"]
    rows = [
        ["深圳示例科技有限公司", "甲", 13800000000, 75512345678, 45292, "张三", *TAGS],
        ["广州样例贸易有限公司", "乙", None, "-", datetime(2024, 1, 2), None, *TAGS],
        ["北京测试网络有限公司", "丙", 13900000000, "010-12345678", "2024/01/03", None,
         *TAGS],
        [None] * 9, [None] * 9,  # trailing empty rows make no phantom leads
    ]
    data = xlsx_bytes(rows, header, merges=["F2:F4"])
    report = await check(rt, data, "leads.xlsx")
    assert report.rejected == [{"row": 3, "field": "phone", "reason": "手机号和座机至少填写一个"}]
    assert report.warnings == [{"row": 2, "field": "landline", "message": "疑似丢失区号前导0"}]
    assert (report.accepted, report.duplicates) == (2, [])
    report = await publish_import(rt, report.import_id, actor=None, skip_invalid=True)
    assert report.written == 2
    first, third = await leads(rt)
    assert (first.phone, first.landline, third.phone, third.landline) == \
        ("13800000000", None, "13900000000", "01012345678")
    assert [lead.first_contact_at.astimezone(SHANGHAI).date() for lead in (first, third)] \
        == [date(2024, 1, 1), date(2024, 1, 3)]
    assert {lead.assignee_id for lead in (first, third)} == {reps["张三"].id}
    assert {lead.status for lead in (first, third)} == {"accepted"}


async def test_a_sparse_sheet_imports_its_lead_and_says_where_reading_stopped(rt):
    # The tester's 5.8 MB sheet: one lead, then 1,048,574 formatted empty rows.
    data = with_empty_rows(xlsx_bytes([row("深圳示例科技有限公司", 13800001234)]),
                           3, 1_048_576)
    report = await check(rt, data, "leads.xlsx")
    assert (report.accepted, report.rejected) == (1, [])
    assert report.warnings == [{"row": 3, "field": None,
                                "message": "从这一行起连续 10,000 行是空行，其后的内容没有读取"}]


async def test_c16_a_csv_phone_in_scientific_notation_is_refused_never_stored(rt):
    data = csv_bytes([row("深圳示例科技有限公司", "1.38E+10")])
    report = await check(rt, data)
    assert report.rejected == [
        {"row": 2, "field": "phone", "reason": "号码已被Excel科学计数法截断"}]
    report = await publish_import(rt, report.import_id, actor=None, skip_invalid=True)
    assert (report.written, await leads(rt)) == (0, [])


async def test_merged_cells_fill_their_range_and_plain_blanks_stay_blank(rt):
    await add_members(rt, {"name": "王芳"})
    header = [*HEADER, "负责人"]
    rows = [[*row("深圳示例科技有限公司", 13800001231), "王芳"],
            [*row("广州样例贸易有限公司", 13800001232), None],
            [*row("北京测试网络有限公司", 13800001233), None]]
    report = await check(rt, xlsx_bytes(rows, header, merges=["G2:G3"]), "leads.xlsx")
    await publish_import(rt, report.import_id, actor=None)
    assert [lead.status for lead in await leads(rt)] == ["accepted", "accepted", "new"]


# --- duplicates ------------------------------------------------------------------------


async def test_c15_phone_formats_are_one_contact_and_duplicates_of_the_first_row(rt):
    mobiles = ["+86 138-0000-0000", "0086 13800000000", "(+86)13800000000",
               "86-138 0000 0000", "１３８００００００００", " 138 0000 0000 ", "13800000000.0",
               "+8613800000000"]
    landlines = ["0755-1234 5678", "+86 755 12345678", "(0755)12345678", "075512345678转801"]
    # One company written as people write it (C14): each row agrees on company and phone.
    names = ["深圳示例科技有限公司", "示例科技（深圳）有限公司", "深圳市示例科技有限责任公司",
             "示例科技"]
    others = ["上海样例贸易有限公司", "样例贸易(上海)有限公司"]
    rows = [row(names[n % 4], p) for n, p in enumerate(mobiles)]
    rows += [row(others[n % 2], p) for n, p in enumerate(landlines)]
    rows.append(row("深圳示例科技有限公司", "1380000000"))
    report = await check(rt, csv_bytes(rows))
    assert report.accepted == 2
    assert report.duplicates == [{"row": n, "of": 2, "kind": "in_file"} for n in range(3, 10)] \
        + [{"row": n, "of": 10, "kind": "in_file"} for n in range(11, 14)]
    assert report.rejected == [
        {"row": 14, "field": "phone", "reason": "手机号应为11位，这里是10位"}]
    await publish_import(rt, report.import_id, actor=None, skip_invalid=True)
    assert [lead.phone for lead in await leads(rt)] == ["13800000000", "075512345678"]


async def test_a_number_alone_is_not_a_duplicate_but_two_agreeing_fields_are(rt):
    header = [*HEADER, "邮箱"]
    rows = [[*row("深圳示例科技有限公司", "13800001234"), "sales@shili.example"],
            # the same number at another company (a shared switchboard): not the same
            [*row("广州样本贸易有限公司", "13800001234"), ""],
            # the same company and e-mail under a new number: the same customer
            [*row("示例科技（深圳）有限公司", "13900005678"), "SALES@shili.example "],
            # the same brand in another city, nothing else shared: not the same
            [*row("北京示例科技有限公司", "13700009012"), ""]]
    report = await check(rt, csv_bytes(rows, header))
    assert report.duplicates == [{"row": 4, "of": 2, "kind": "in_file"}]
    assert report.accepted == 3


async def test_published_leads_are_found_by_the_duplicate_check_afterwards(rt):
    from handlers.matching import find_similar, keys_for

    rows = [row("深圳示例科技有限公司", "13800001234"), row("广州样例贸易有限公司", "13900005678")]
    report = await check(rt, csv_bytes(rows))
    await publish_import(rt, report.import_id, actor=None)
    first, _second = await leads(rt)
    assert (first.phone_key, first.company_core) == ("13800001234", "示例科技")
    async with rt.sessions() as session:
        [found] = await find_similar(session, keys_for("示例科技（深圳）有限公司", "李四",
                                                       "+86 138 0000 1234", None))
    assert (found.kind, found.id, found.reasons) == ("lead", first.id, ["phone", "company"])


async def test_duplicates_of_leads_customers_and_known_external_ids_are_not_written(rt):
    async with rt.sessions() as session, session.begin():
        old, _ = await create_lead(session, rt, LeadInput(
            "深圳示例科技有限公司", "张三", "13800001234", "industrial", "high", "expo",
            external_id="EXPO-1"), rt.now(), origin="api")
        landline, _ = await create_lead(session, rt, LeadInput(
            "上海示例有限公司", "钱七", "075512345678-801", "industrial", "high", "expo"),
            rt.now(), origin="api")
        customer = Customer(company="广州样例贸易有限公司", contact="李四", phone="13800001235")
        session.add(customer)
    header = [*HEADER, "座机", "外部编号"]
    rows = [[*row("示例科技（深圳）有限公司", "13800001234"), "", ""],
            [*row("广州样例贸易有限责任公司", "138 0000 1235"), "", ""],
            [*row("新公司丙", "13800001236"), "", "EXPO-1"],
            [*row("上海示例", ""), "0755-12345678", ""],
            [*row("新公司戊", "13800001237"), "", "EXPO-2"],
            [*row("新公司己", "13800001238"), "", "EXPO-2"]]
    report = await check(rt, csv_bytes(rows, header))
    assert report.duplicates == [
        {"row": 2, "of": old.id, "kind": "lead"},
        {"row": 3, "of": customer.id, "kind": "customer"},
        {"row": 4, "of": old.id, "kind": "external_id"},
        {"row": 5, "of": landline.id, "kind": "lead"},
        {"row": 7, "of": 6, "kind": "in_file"},
    ]
    assert (report.accepted, report.rejected) == (1, [])
    report = await publish_import(rt, report.import_id, actor=None)
    assert (report.written, len(await leads(rt))) == (1, 3)


async def test_a_lead_stored_between_check_and_publish_becomes_a_duplicate(rt):
    report = await check(rt, csv_bytes([row("深圳示例科技有限公司", "13800001234"),
                                        row("广州样例贸易有限公司", "13800001235")]))
    async with rt.sessions() as session, session.begin():
        late, _ = await create_lead(session, rt, LeadInput(
            "广州样例贸易有限公司", "李四", "13800001235", "industrial", "high", "expo"),
            rt.now(), origin="api")
    report = await publish_import(rt, report.import_id, actor=None)
    assert report.written == 1
    assert report.duplicates == [{"row": 3, "of": late.id, "kind": "lead"}]


# --- all or nothing --------------------------------------------------------------------


async def test_rejected_rows_without_skip_invalid_write_nothing_and_the_import_waits(rt):
    data = csv_bytes([row("深圳示例科技有限公司", "13800001234"), row("", "13800001235")])
    report = await check(rt, data)
    assert report.rejected == [{"row": 3, "field": "company", "reason": "必填"}]
    again = await publish_import(rt, report.import_id, actor=None)
    assert (again.written, again.state, await leads(rt)) == (0, "checked", [])
    done = await publish_import(rt, report.import_id, actor=None, skip_invalid=True)
    assert (done.written, done.state, len(await leads(rt))) == (1, "published", 1)


async def test_a_failure_during_publish_writes_nothing(rt, monkeypatch):
    report = await check(rt, csv_bytes([row(f"公司{n}", f"1380000{n:04d}") for n in range(5)]))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(lead_import, "audit", broken)  # after the INSERT, in its transaction
    with pytest.raises(RuntimeError):
        await publish_import(rt, report.import_id, actor=None)
    assert await leads(rt) == []
    assert (await load_report(rt, report.import_id)).state == "checked"
    monkeypatch.undo()
    assert (await publish_import(rt, report.import_id, actor=None)).written == 5


async def test_publishing_twice_writes_once_and_answers_the_same_report(rt):
    report = await check(rt, csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    first = await publish_import(rt, report.import_id, actor=None)
    second = await publish_import(rt, report.import_id, actor=None)
    assert first == second and first.written == 1
    assert len(await leads(rt)) == 1


async def test_cancel_drops_the_staged_rows_and_publish_is_refused(rt):
    report = await check(rt, csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    await lead_import.cancel_import(rt, report.import_id, actor=None)
    with pytest.raises(ImportError, match="已取消"):
        await publish_import(rt, report.import_id, actor=None)
    assert await stored_rejected_rows(rt, report.import_id) == []


async def test_the_stored_report_and_the_rejected_rows_workbook(rt):
    data = csv_bytes([row("深圳示例科技有限公司", "13800001234"), row("", "1.38E+10"),
                      row("深圳市示例科技有限责任公司", "13800001234")])
    report = await check(rt, data)
    stored = await load_report(rt, report.import_id)
    assert stored == report
    book = load_workbook(io.BytesIO(rejected_rows_xlsx(
        await stored_rejected_rows(rt, report.import_id))))
    cells = [list(r) for r in book.active.iter_rows(values_only=True)]
    assert cells == [
        ["行号", "公司名称", "联系人", "手机号", "行业", "紧急程度", "来源渠道", "原因"],
        [3, None, "张三", "1.38E+10", "工业", "高", "展会",
         "公司名称：必填；手机号：号码已被Excel科学计数法截断"],
        [4, "深圳市示例科技有限责任公司", "张三", "13800001234", "工业", "高", "展会",
         "与第2行重复"],
    ]


async def test_cells_that_look_like_formulas_come_back_as_text(rt):
    data = csv_bytes([row('=HYPERLINK("http://127.0.0.1/x")', "1.38E+10")])
    report = await check(rt, data)
    book = load_workbook(io.BytesIO(rejected_rows_xlsx(
        await stored_rejected_rows(rt, report.import_id))))
    cell = book.active["B2"]
    assert (cell.value, cell.data_type) == ('=HYPERLINK("http://127.0.0.1/x")', "s")


async def test_a_cancelled_import_keeps_its_problem_rows_until_the_purge(rt):
    data = csv_bytes([row("深圳示例科技有限公司", "13800001234"), row("", "1.38E+10")])
    rt.clock = FrozenClock(WORKDAY_MORNING)
    report = await check(rt, data)
    await lead_import.cancel_import(rt, report.import_id, actor=None)
    assert [r.row_number for r in await stored_rejected_rows(rt, report.import_id)] == [3]
    assert await staged(rt) == 1  # the valid row went at once
    rt.clock.advance(seconds=(lead_import.PROBLEMS_KEEP - timedelta(minutes=1)).total_seconds())
    assert await lead_import.purge_imports(rt) == 0 and await staged(rt) == 1
    rt.clock.advance(minutes=2)
    assert await lead_import.purge_imports(rt) == 1 and await staged(rt) == 0


async def test_a_command_line_import_loses_its_staged_rows_once_indexed(rt):
    rt.clock = FrozenClock(WORKDAY_MORNING)
    report = await check(rt, csv_bytes([row("深圳示例科技有限公司", "13800001234"),
                                        row("广州样例贸易有限公司", "13800005678")]))
    await publish_import(rt, report.import_id, actor=None)
    assert await staged(rt) == 2
    assert await lead_import.purge_imports(rt) == 0  # its leads have no grams yet
    assert await lead_import.index_imports(rt) == 1
    assert await lead_import.purge_imports(rt) == 1 and await staged(rt) == 0
    assert len(await leads(rt)) == 2


async def test_a_check_nobody_confirms_is_cancelled_after_a_day(rt):
    rt.clock = FrozenClock(WORKDAY_MORNING)
    report = await check(rt, csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    rt.clock.advance(seconds=(lead_import.CHECKED_KEEP + timedelta(minutes=1)).total_seconds())
    assert await lead_import.purge_imports(rt) == 1
    async with rt.sessions() as session:
        assert (await session.get(LeadImport, report.import_id)).state == "cancelled"
    assert await staged(rt) == 0 and await leads(rt) == []
    with pytest.raises(ImportError, match="已取消"):
        await publish_import(rt, report.import_id, actor=None)


async def staged(rt) -> int:
    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(LeadImportRow))


def test_the_template_holds_the_chinese_names_in_xlsx_and_csv():
    names = ["公司名称", "联系人", "手机号", "座机", "邮箱", "行业", "紧急程度", "来源渠道",
             "备注", "负责人", "首次联系", "员工数", "外部编号"]
    book = load_workbook(io.BytesIO(template_bytes("xlsx")))
    assert [c.value for c in book.active[1]] == names
    assert template_bytes("csv").decode("utf-8-sig").strip() == ",".join(names)


# --- assignment ------------------------------------------------------------------------


async def test_imported_leads_reach_each_rep_in_one_digest_and_show_in_my_leads(chat):
    members = await chat.add_members({"name": "王芳"}, {"name": "赵强"},
                                     {"name": "李静", "role": "marketing"})
    rows = [row(f"示例公司{n}", f"1380000{n:04d}") for n in range(6)]
    report = await check_import(chat.rt, csv_bytes(rows), "展会名单.csv", ImportOptions(),
                                actor=members["李静"], origin="chat")
    await publish_import(chat.rt, report.import_id, actor=None)
    await chat.settle()
    stored = await leads(chat.rt)
    assert {lead.status for lead in stored} == {"assigned"}
    assert await _cards(chat.rt) == 0  # no card per lead: one digest each
    for name in ("王芳", "赵强"):
        messages = await chat.inbox(name)
        mine = [f"#{lead.id}" for lead in stored
                if lead.assignee_id == (await _member(chat.rt, name)).id]
        assert [m.text for m in messages] == [
            f"导入分配给您 3 条新线索（{'、'.join(mine)}），发送 /我的线索 查看并接受；"
            "一个工作日内未接受的线索会转给其他同事"]
        listing = await chat.say(name, "/我的线索")
        assert listing[0].text.startswith("您的进行中线索（3 条）：")
        assert all(f"{n} " in listing[0].text for n in mine)
    async with chat.rt.sessions() as session:
        history = (await session.scalars(select(LeadStatusChange.to_status)
                                         .order_by(LeadStatusChange.id))).all()
    assert await _cards(chat.rt) == 6  # the first 3 of each rep, sent by /我的线索
    assert history == ["new"] * 6 + ["assigned"] * 6


async def test_a_rep_named_as_owner_is_told_once_and_owns_the_leads_like_typed_ones(chat):
    from storage.models import Assignment

    await chat.add_members({"name": "王芳"}, {"name": "赵强"},
                           {"name": "李静", "role": "marketing"})
    header = [*HEADER, "负责人"]
    rows = [[*row("示例公司甲", "13800000001"), "王芳"],
            [*row("示例公司乙", "13800000002"), "赵强"],
            [*row("示例公司丙", "13800000003"), "王芳"]]
    report = await check_import(chat.rt, csv_bytes(rows, header), "展会名单.csv",
                                ImportOptions(), actor=None, origin="cli")
    await publish_import(chat.rt, report.import_id, actor=None)
    await chat.settle()
    first, second, third = await leads(chat.rt)
    assert [m.text for m in await chat.inbox("王芳")] == [
        f"导入给您 2 条线索（#{first.id}、#{third.id}），表中负责人是您，已直接记在您名下；"
        "发送 /我的线索 查看"]
    assert [m.text for m in await chat.inbox("赵强")] == [
        f"导入给您 1 条线索（#{second.id}），表中负责人是您，已直接记在您名下；"
        "发送 /我的线索 查看"]
    listing = await chat.say("王芳", "/我的线索")
    assert listing[0].text.startswith("您的进行中线索（2 条）：")
    # As a lead a rep types in: accepted by that rep, no engine offer (the engine's
    # analysis counts only its own offers), its history saying why.
    assert {(lead.status, lead.accepted_at is not None) for lead in (first, third)} == \
        {("accepted", True)}
    async with chat.rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Assignment)) == 0
        reasons = (await session.scalars(select(LeadStatusChange.reason))).all()
    assert reasons == ["导入（负责人）"] * 3


async def test_a_rep_both_named_as_owner_and_offered_leads_gets_one_message(chat):
    await chat.add_members({"name": "王芳"})
    await chat.say("王芳", "/上班")
    header = [*HEADER, "负责人"]
    rows = [[*row("示例公司甲", "13800000001"), "王芳"],
            [*row("示例公司乙", "13800000002"), ""]]
    report = await check_import(chat.rt, csv_bytes(rows, header), "展会名单.csv",
                                ImportOptions(), actor=None, origin="cli")
    await publish_import(chat.rt, report.import_id, actor=None)
    await chat.settle()
    owned, offered = await leads(chat.rt)
    assert (owned.status, offered.status) == ("accepted", "assigned")
    assert [m.text for m in await chat.inbox("王芳")] == [
        f"导入分配给您 1 条新线索（#{offered.id}），发送 /我的线索 查看并接受；"
        "一个工作日内未接受的线索会转给其他同事\n"
        f"导入给您 1 条线索（#{owned.id}），表中负责人是您，已直接记在您名下；"
        "发送 /我的线索 查看"]


async def test_a_crash_after_the_publish_is_finished_by_the_sweep_with_digests(chat):
    from datetime import timedelta

    from handlers.assignment import IMPORT_LEASE
    from scheduler.sweeps import sweep_once
    from storage.models import LeadImport

    members = await chat.add_members({"name": "王芳"}, {"name": "赵强"},
                                     {"name": "李静", "role": "marketing"})
    rows = [row(f"示例公司{n}", f"1380000{n:04d}") for n in range(6)]
    report = await check_import(chat.rt, csv_bytes(rows), "展会名单.csv", ImportOptions(),
                                actor=members["李静"], origin="chat")

    async def crash(*args, **kwargs):  # the process dies right after the publish commits
        raise SystemExit("killed")

    real = lead_import._hand_out
    lead_import._hand_out = crash
    try:
        with pytest.raises(SystemExit):
            await publish_import(chat.rt, report.import_id, actor=None)
    finally:
        lead_import._hand_out = real
    assert {lead.status for lead in await leads(chat.rt)} == {"new"}

    await sweep_once(chat.rt)  # within the lease: the queue leaves the import's leads alone
    await chat.settle()
    assert {lead.status for lead in await leads(chat.rt)} == {"new"}
    # the lease runs out: nobody has touched the import for longer than IMPORT_LEASE
    async with chat.rt.sessions() as session, session.begin():
        await session.execute(update(LeadImport).where(LeadImport.id == report.import_id)
                              .values(updated_at=chat.rt.now() - IMPORT_LEASE
                                      - timedelta(seconds=30)))
    await sweep_once(chat.rt)
    await chat.settle()
    assert {lead.status for lead in await leads(chat.rt)} == {"assigned"}
    assert await _cards(chat.rt) == 0  # still one digest each, no card per lead
    for name in ("王芳", "赵强"):
        [digest] = await chat.inbox(name)
        assert digest.text.startswith("导入分配给您 3 条新线索")
    async with chat.rt.sessions() as session:
        assert (await session.get(LeadImport, report.import_id)).state == "published"
    # The importer, who saw 开始导入 and then nothing, is told it finished and where.
    [told] = await chat.inbox("李静")
    assert told.text == ("导入「展会名单.csv」曾因服务中断停在分配这一步，现已自动完成："
                         "写入 6 条，已分配给 王芳 3 条、赵强 3 条。")



async def test_a_digest_lead_not_accepted_within_a_working_day_goes_to_a_colleague(chat):
    from handlers.assignment import expire_offers
    from storage.models import Assignment

    await chat.add_members({"name": "王芳"}, {"name": "赵强"})
    rows = [row(f"示例公司{n}", f"1380000{n:04d}") for n in range(4)]
    report = await check_import(chat.rt, csv_bytes(rows), "leads.csv", ImportOptions(),
                                actor=None, origin="cli")
    await publish_import(chat.rt, report.import_id, actor=None)
    await chat.settle()
    first = {lead.id: lead.assignee_id for lead in await leads(chat.rt)}
    await chat.say("王芳", "/我的线索")
    wang = await _member(chat.rt, "王芳")
    mine = [lead_id for lead_id, rep in first.items() if rep == wang.id]
    await chat.click("王芳", f"accept:{mine[0]}")
    # 10:00 plus 480 working minutes is 18:00 the same day (working hours 09:00–18:00).
    chat.rt.clock.advance(hours=7, minutes=59)
    assert await expire_offers(chat.rt) == 0
    chat.rt.clock.advance(hours=16)  # the next morning
    assert await expire_offers(chat.rt) == 3  # the one 王芳 accepted stays hers
    await chat.settle()
    now = {lead.id: (lead.assignee_id, lead.status) for lead in await leads(chat.rt)}
    assert now[mine[0]] == (wang.id, "accepted")
    for lead_id, rep in first.items():
        if lead_id != mine[0]:
            assert now[lead_id][0] not in (rep, None) and now[lead_id][1] == "assigned"
    async with chat.rt.sessions() as session:
        states = sorted((await session.scalars(select(Assignment.state))).all())
    assert states == ["accepted"] + ["expired"] * 3 + ["offered"] * 3


async def _cards(rt) -> int:
    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Outgoing)
                                    .where(Outgoing.kind == "card"))


async def test_import_assignment_keeps_within_each_reps_cap(chat):
    await chat.add_members({"name": "王芳", "max_open_leads": 2},
                           {"name": "赵强", "max_open_leads": 1})
    rows = [row(f"示例公司{n}", f"1380000{n:04d}") for n in range(5)]
    report = await check_import(chat.rt, csv_bytes(rows), "leads.csv", ImportOptions(),
                                actor=None, origin="chat")
    await publish_import(chat.rt, report.import_id, actor=None)
    await chat.settle()
    assert [lead.status for lead in await leads(chat.rt)] == \
        ["assigned"] * 3 + ["new"] * 2
    assert [m.text[:13] for m in await chat.inbox("王芳")] == ["导入分配给您 2 条新线索"]
    assert [m.text[:13] for m in await chat.inbox("赵强")] == ["导入分配给您 1 条新线索"]


async def _member(rt, name) -> Member:
    async with rt.sessions() as session:
        return await session.scalar(select(Member).where(Member.name == name))


# --- the command line ------------------------------------------------------------------


def run_cli(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env["SALESBOT_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    return subprocess.run([str(SALESBOT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def cli_leads(tmp_path) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as conn:
        return conn.execute("SELECT count(*) FROM leads").fetchone()[0]


def test_cli_exit_0_writes_and_prints_the_json_last(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row("深圳示例科技有限公司", "13800001234"),
                                row("示例科技（深圳）有限公司", "13800001234")]))
    done = run_cli(tmp_path, "leads", "import", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "accepted": 1, "written": 1, "rejected": [],
        "duplicates": [{"row": 3, "of": 2, "kind": "in_file"}], "warnings": []}
    assert cli_leads(tmp_path) == 1


def test_cli_dry_run_writes_nothing(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    done = run_cli(tmp_path, "leads", "import", str(path), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["accepted"] == 1
    assert cli_leads(tmp_path) == 0


def test_cli_exit_1_writes_nothing_unless_skip_invalid(tmp_path):
    path = tmp_path / "leads.csv"
    header = [*HEADER, "员工数"]
    path.write_bytes(csv_bytes([[*row("深圳示例科技有限公司", "13800001234"), "12"],
                                [*row("广州样例贸易有限公司", "13800001235"), "-"]], header))
    done = run_cli(tmp_path, "leads", "import", str(path), "--json")
    assert done.returncode == 1
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rejected"] == [{"row": 3, "field": "employees",
                                    "reason": "应为不小于0的整数，不能是占位符“-”"}]
    assert (summary["accepted"], summary["written"], cli_leads(tmp_path)) == (1, 0, 0)
    assert "第3行 员工数: 应为不小于0的整数，不能是占位符“-”" in done.stderr
    done = run_cli(tmp_path, "leads", "import", str(path), "--skip-invalid", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout.strip().splitlines()[-1])["written"] == 1
    assert cli_leads(tmp_path) == 1


def test_cli_default_and_sheet(tmp_path):
    path = tmp_path / "leads.xlsx"
    header = ["客户名称", "联系人", "手机"]
    path.write_bytes(xlsx_bytes([["深圳示例科技有限公司", "张三", 13800001234]], header,
                                sheets={"说明": (["随便"], [])}))
    done = run_cli(tmp_path, "leads", "import", str(path), "--sheet", "线索", "--json",
                   "--default", "行业=工业", "--default", "urgency=high",
                   "--default", "来源=展会")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["written"] == 1


EMPTY_JSON = {"accepted": 0, "written": 0, "rejected": [], "duplicates": [], "warnings": []}


@pytest.mark.parametrize("name, data, message", [
    ("leads.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64, "不支持旧版 .xls 格式"),
    ("leads.csv", b"\xff\xfe\x00", "无法识别文件的文字编码"),
    ("leads.csv", "备注\n随便\n".encode(), "缺少必需的列"),
    ("leads.csv", xlsx_bytes([row("深圳示例科技有限公司", 13800001234)]),
     "文件内容是 xlsx 表格，扩展名却是“.csv”，请把扩展名改为 .xlsx 后重新导入"),
    ("missing.csv", None, "找不到文件"),
    ("bomb.xlsx", "bomb", "疑似压缩炸弹，已拒绝读取"),  # a 20 MB 备注 in 20 KB
])
def test_cli_exit_2_when_the_file_cannot_be_read(tmp_path, name, data, message):
    path = tmp_path / name
    if data == "bomb":
        data = note_sheet(b"a" * 20_000_000)
    if data is not None:
        path.write_bytes(data)
    done = run_cli(tmp_path, "leads", "import", str(path), "--json")
    assert done.returncode == 2
    assert done.stderr.startswith("salesbot: ") and message in done.stderr
    # The contract's object and nothing else: the message is on stderr.
    assert json.loads(done.stdout.strip().splitlines()[-1]) == EMPTY_JSON


def test_cli_a_bad_default_still_ends_with_the_json_object(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    done = run_cli(tmp_path, "leads", "import", str(path), "--json", "--default", "颜色=红")
    assert done.returncode == 2
    assert json.loads(done.stdout.strip().splitlines()[-1]) == EMPTY_JSON
    assert done.stderr.startswith("salesbot: --default 的字段“颜色”不存在")


def test_cli_refuses_a_field_defaulted_twice_and_a_sheet_named_for_a_csv(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    twice = run_cli(tmp_path, "leads", "import", str(path), "--default", "来源=展会",
                    "--default", "source=SEM")
    assert twice.returncode == 2
    assert twice.stderr == "salesbot: --default 给字段“来源渠道”指定了两次，请只保留一个\n"
    sheet = run_cli(tmp_path, "leads", "import", str(path), "--sheet", "线索")
    assert sheet.returncode == 2
    assert sheet.stderr.startswith(
        "salesbot: 无法读取文件：csv 文件只有一张表，不能指定工作表“线索”")
    assert cli_leads(tmp_path) == 0


def test_cli_dry_run_leaves_no_names_or_phones_staged(tmp_path):
    import sqlite3

    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row("深圳示例科技有限公司", "13800001234"),
                                row("广州样例贸易有限公司", "12345")]))
    done = run_cli(tmp_path, "leads", "import", str(path), "--dry-run", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout.strip().splitlines()[-1])["rejected"] == [
        {"row": 3, "field": "phone", "reason": "不是有效的手机号或带区号的座机号"}]
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        assert conn.execute("SELECT count(*) FROM lead_import_rows").fetchone()[0] == 0
        assert conn.execute("SELECT state FROM lead_imports").fetchall() == [("cancelled",)]


def test_cli_a_run_of_duplicates_only_leaves_nothing_staged(tmp_path):
    import sqlite3

    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row("深圳示例科技有限公司", "13800001234")]))
    assert run_cli(tmp_path, "leads", "import", str(path)).returncode == 0
    done = run_cli(tmp_path, "leads", "import", str(path), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["written"], len(summary["duplicates"])) == (0, 1)
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        counts = conn.execute("SELECT import_id, count(*) FROM lead_import_rows "
                              "GROUP BY import_id").fetchall()
    assert [import_id for import_id, _ in counts] == [1]  # the first run's, for the sweep


async def test_cli_progress_covers_the_hand_out_in_plain_lines_without_a_terminal(
    chat, monkeypatch, capsys, tmp_path,
):
    from bot import app as bot_app

    await chat.add_members({"name": "王芳"}, {"name": "赵强"})
    real = bot_app.build_runtime

    def built(settings):  # the command's runtime, on the test's clock (reps on duty)
        runtime = real(settings)
        runtime.clock = chat.rt.clock
        return runtime

    monkeypatch.setattr(bot_app, "build_runtime", built)
    monkeypatch.setattr(lead_import, "CHUNK", 100)
    monkeypatch.setattr(lead_import, "CLI_PROGRESS_STEP", 100)
    path = tmp_path / "leads.csv"
    path.write_bytes(csv_bytes([row(f"示例公司{n}", f"1380000{n:04d}") for n in range(250)]))
    assert await lead_import.import_leads_cli(chat.rt.settings, path, ImportOptions()) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # stderr is no terminal here
    assert err.splitlines() == ["已检查 100/250 行", "已检查 200/250 行", "已检查 250/250 行",
                                "已分配 100/250 条", "已分配 200/250 条", "已分配 250/250 条"]


async def test_on_a_terminal_the_progress_line_is_redrawn_in_place_and_ended():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    line = lead_import.ProgressLine("已检查 {done}/{total} 行", stream)
    for done in (2000, 4000, 4500):
        await line(done, 4500)
    line.end()
    assert stream.getvalue() == "\r已检查 2000/4500 行\r已检查 4000/4500 行\r已检查 4500/4500 行\n"


def test_cli_template(tmp_path):
    done = run_cli(tmp_path, "leads", "template", str(tmp_path / "模板.xlsx"))
    assert done.returncode == 0, done.stderr
    assert load_workbook(tmp_path / "模板.xlsx").active["A1"].value == "公司名称"
    assert run_cli(tmp_path, "leads", "template", str(tmp_path / "t.txt")).returncode == 2


def test_template_into_a_folder_that_does_not_exist_says_so(tmp_path, capsys):
    target = tmp_path / "nonexistent" / "x.xlsx"
    assert lead_import.template_cli(target) == 2
    assert capsys.readouterr().err == \
        f"salesbot: 无法写入 {target}：No such file or directory\n"
    assert lead_import.template_cli(tmp_path / "t.txt") == 2
    assert capsys.readouterr().err == "salesbot: 模板文件应以 .xlsx 或 .csv 结尾\n"


async def test_the_sweep_writes_an_imports_company_grams_after_it_is_published(rt):
    """The grams (/查客户 by part of a name) are the largest write of an import: they come
    after its leads are handed out, from the sweep, not on the import's path."""
    from handlers.lead_import import index_imports
    from handlers.normalize import company_grams
    from storage.models import MatchGram

    data = csv_bytes([row("深圳市示例科技有限公司", "13800001234"),
                      row("广州样本贸易有限公司", "13800005678")])
    report = await check(rt, data)
    await publish_import(rt, report.import_id, actor=None)

    async def grams() -> dict[int, list[str]]:
        async with rt.sessions() as session:
            found: dict[int, list[str]] = {}
            for object_id, gram in (await session.execute(
                    select(MatchGram.object_id, MatchGram.gram).where(MatchGram.kind == "lead")
                    .order_by(MatchGram.object_id, MatchGram.gram))).all():
                found.setdefault(object_id, []).append(gram)
            return found

    assert await grams() == {}
    assert await index_imports(rt) == 1
    stored = await leads(rt)
    assert await grams() == {lead.id: company_grams(lead.company_core) for lead in stored}
    assert sorted(await grams()) == [lead.id for lead in stored]
    assert await index_imports(rt) == 0  # done once
    async with rt.sessions() as session:
        record = await session.get(LeadImport, report.import_id)
    assert record.indexed_at is not None
