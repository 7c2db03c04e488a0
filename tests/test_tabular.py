"""The spreadsheet reader: encodings, delimiters, xlsx cells, merged ranges (C16, C17)."""

from __future__ import annotations

import io
import random
import re
import zipfile
from datetime import datetime

import pytest
from openpyxl import Workbook

from handlers import tabular
from handlers.tabular import (
    CellError,
    Column,
    TableError,
    cell_text,
    read_table,
    read_table_file,
    whole_number,
)

COLUMNS = [
    Column("company", ("客户名称", "公司名称", "company")),
    Column("phone", ("手机", "电话", "phone")),
    Column("landline", ("座机",)),
    Column("first_contact", ("首次联系",)),
    Column("owner", ("负责人",)),
    Column("employees", ("员工数",)),
]
C17_TEXT = "客户名称,电话\n深圳示例科技有限公司,13800000000\n"
C17_ROW = {"company": "深圳示例科技有限公司", "phone": "13800000000"}


def xlsx_bytes(rows, merge=(), title="Sheet1") -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    for cells in merge:
        sheet.merge_cells(cells)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def only_row(table):
    [row] = table.rows
    return row.number, row.values


def test_gbk_csv_from_chinese_excel_reads_one_row():
    data = C17_TEXT.encode("gbk")
    assert data[:2] == b"\xbf\xcd"  # the bytes that break a UTF-8-only reader
    assert only_row(read_table(data, "leads.csv", COLUMNS)) == (2, C17_ROW)


def test_a_line_of_another_encoding_or_a_nul_byte_names_its_line():
    lines = ["客户名称,电话", "深圳示例科技有限公司,13800000000",
             "广州样例贸易有限公司,13800000001"]
    mixed = "\n".join(lines[:2]).encode() + b"\n" + lines[2].encode("gbk") + b"\n"
    with pytest.raises(TableError, match="第 3 行附近的文字既不是 UTF-8 也不是 GBK"):
        read_table(mixed, "leads.csv", COLUMNS)
    nul = "\n".join(lines).encode().replace(b"13800000001", b"1380000\x000001")
    with pytest.raises(TableError, match="第 3 行含有空字符"):
        read_table(nul, "leads.csv", COLUMNS)


def test_utf8_with_bom_does_not_hide_the_first_header():
    data = C17_TEXT.encode("utf-8-sig")
    assert data[:3] == b"\xef\xbb\xbf"
    table = read_table(data, "leads.csv", COLUMNS, required=["company"])
    assert table.fields == ["company", "phone"]
    assert only_row(table) == (2, C17_ROW)


def test_plain_utf8_and_gb18030_read_the_same():
    for encoding in ("utf-8", "gb18030"):
        assert only_row(read_table(C17_TEXT.encode(encoding), "a.csv", COLUMNS)) == (2, C17_ROW)


def test_utf16_unicode_text_from_excel():
    data = C17_TEXT.replace(",", "\t").encode("utf-16")
    assert only_row(read_table(data, "leads.txt", COLUMNS)) == (2, C17_ROW)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_delimiters_are_detected(delimiter):
    text = "客户名称;电话;备注\n深圳示例科技有限公司;13800000000;a,b\n".replace(";", delimiter)
    table = read_table(text.encode("gbk"), "leads.csv", COLUMNS)
    assert only_row(table) == (2, C17_ROW)
    assert table.ignored == ["备注"]


def test_headers_are_trimmed_of_full_width_and_ascii_spaces_and_case():
    text = "\ufeff\u3000客户名称 ,  PHONE\u3000\n甲公司,13800000001\n"
    table = read_table(text.encode("utf-8"), "a.csv", COLUMNS)
    assert only_row(table) == (2, {"company": "甲公司", "phone": "13800000001"})


def test_quoted_cells_with_delimiters_and_line_breaks_stay_one_row():
    text = '客户名称,电话\n"甲, 乙\n联合公司",13800000002\n丙公司,13800000003\n'
    table = read_table(text.encode(), "a.csv", COLUMNS)
    assert [(r.number, r.values["company"]) for r in table.rows] == [
        (2, "甲, 乙\n联合公司"), (3, "丙公司")]


def test_blank_rows_are_skipped_but_row_numbers_stay_as_excel_shows_them():
    text = "客户名称,电话\n甲公司,13800000001\n,\n\n乙公司,13800000002\n,,\n\n\n"
    table = read_table(text.encode(), "a.csv", COLUMNS)
    assert [r.number for r in table.rows] == [2, 5]


def test_a_title_row_above_the_header_is_passed_over():
    text = "2026年12月线索表,\n客户名称,电话\n甲公司,13800000001\n"
    table = read_table(text.encode(), "a.csv", COLUMNS)
    assert table.header_row == 2
    assert only_row(table) == (3, {"company": "甲公司", "phone": "13800000001"})


def test_xlsx_cells_are_read_as_the_cells_hold_them():
    data = xlsx_bytes([
        ["客户名称", "手机", "座机", "首次联系", "员工数"],
        ["深圳示例科技有限公司", 13800000000, 75512345678, 45292, 12.0],
        ["广州样例贸易有限公司", None, "-", datetime(2024, 1, 2), 2.5],
        ["北京测试网络有限公司", 13900000000.0, "010-12345678", "2024/01/03", None],
    ])
    rows = read_table(data, "leads.xlsx", COLUMNS).rows
    assert [r.values for r in rows] == [
        {"company": "深圳示例科技有限公司", "phone": 13800000000, "landline": 75512345678,
         "first_contact": 45292, "employees": 12},
        {"company": "广州样例贸易有限公司", "phone": None, "landline": "-",
         "first_contact": datetime(2024, 1, 2), "employees": 2.5},
        {"company": "北京测试网络有限公司", "phone": 13900000000, "landline": "010-12345678",
         "first_contact": "2024/01/03", "employees": None},
    ]
    assert cell_text(rows[0].values["phone"]) == "13800000000"
    assert cell_text(rows[2].values["phone"]) == "13900000000"


def test_merged_cells_are_filled_from_their_top_left_and_plain_blanks_stay_blank():
    data = xlsx_bytes([
        ["客户名称", "手机", "负责人"],
        ["深圳示例科技有限公司", "13800000000", "张三"],
        ["广州样例贸易有限公司", None, None],
        ["北京测试网络有限公司", "13900000000", None],
        ["上海演示有限公司", "13800000004", None],
    ], merge=["C2:C4"])
    rows = read_table(data, "leads.xlsx", COLUMNS).rows
    assert [r.values["owner"] for r in rows] == ["张三", "张三", "张三", None]
    assert rows[1].values["phone"] is None


def test_a_range_merged_across_columns_fills_only_down_its_first_column():
    data = xlsx_bytes([
        ["客户名称", "手机", "负责人", "员工数"],
        ["深圳示例科技有限公司", "13800000000", "张三", None],
        ["广州样例贸易有限公司", "13900000000", None, None],
    ], merge=["C2:D3"])
    rows = read_table(data, "leads.xlsx", COLUMNS).rows
    # Excel shows 张三 once over both columns: 员工数 is empty, not 张三
    assert [(r.values["owner"], r.values["employees"]) for r in rows] == [
        ("张三", None), ("张三", None)]


def test_blank_trailing_xlsx_rows_are_not_rows():
    book = Workbook()
    sheet = book.active
    sheet.append(["客户名称", "手机"])
    sheet.append(["甲公司", "13800000001"])
    sheet.cell(row=40, column=1).value = "   "  # formatted or whitespace-only cells below
    sheet.cell(row=41, column=2).value = None
    out = io.BytesIO()
    book.save(out)
    table = read_table(out.getvalue(), "a.xlsx", COLUMNS)
    assert [r.number for r in table.rows] == [2]


def test_the_sheet_can_be_chosen_by_name():
    book = Workbook()
    book.active.append(["说明"])
    other = book.create_sheet("线索")
    other.append(["客户名称"])
    other.append(["甲公司"])
    out = io.BytesIO()
    book.save(out)
    table = read_table(out.getvalue(), "a.xlsx", COLUMNS, sheet="线索")
    assert only_row(table) == (2, {"company": "甲公司"})
    with pytest.raises(TableError, match="找不到工作表“其他”"):
        read_table(out.getvalue(), "a.xlsx", COLUMNS, sheet="其他")


@pytest.mark.parametrize("filename, data, reason", [
    ("leads.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504, "不支持旧版 .xls 格式"),
    ("leads.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504, "文件已加密"),
    ("leads.xlsx", b"not a zip at all", "不是有效的 .xlsx 文件"),
    ("leads.pdf", b"%PDF-1.4", "不支持的文件格式“.pdf”"),
    ("leads.csv", b"", "文件是空的"),
    ("leads.csv", "名字,号码\n张三,1\n".encode(), "找不到表头行"),
])
def test_files_that_cannot_be_read_say_why(filename, data, reason):
    with pytest.raises(TableError) as info:
        read_table(data, filename, COLUMNS)
    assert str(info.value).startswith("无法读取文件：")
    assert reason in str(info.value)


def test_a_zip_that_is_not_a_workbook_cannot_be_read():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(TableError, match="不是有效的 .xlsx 文件"):
        read_table(out.getvalue(), "a.xlsx", COLUMNS)


def test_missing_required_columns_are_named():
    data = "客户名称,备注\n甲公司,x\n".encode()
    with pytest.raises(TableError) as info:
        read_table(data, "a.csv", COLUMNS, required=["company", ("phone", "landline")])
    assert str(info.value) == "缺少必需的列：手机/座机"


def test_reading_from_disk(tmp_path):
    path = tmp_path / "团队.csv"
    path.write_bytes(C17_TEXT.encode("gbk"))
    assert only_row(read_table_file(path, COLUMNS)) == (2, C17_ROW)
    with pytest.raises(TableError, match="找不到文件"):
        read_table_file(tmp_path / "missing.csv", COLUMNS)


@pytest.mark.parametrize("value, number", [
    (None, None), ("", None), ("  ", None), ("0", 0), ("12", 12), (" 7 ", 7), ("３", 3),
    (5, 5), (3.0, 3), ("4.0", 4),
])
def test_whole_numbers(value, number):
    assert whole_number(value) == number


@pytest.mark.parametrize("value, reason", [
    ("-", "应为不小于0的整数，不能是占位符“-”"),
    ("—", "应为不小于0的整数，不能是占位符“—”"),
    ("-3", "应为不小于0的整数，不能是负数"),
    (-3, "应为不小于0的整数，不能是负数"),
    ("2.5", "应为整数，不能是小数"),
    (2.5, "应为整数，不能是小数"),
    ("abc", "应为不小于0的整数"),
    ("1,000", "应为不小于0的整数"),
    (True, "应为不小于0的整数"),
    ("99999999999", "数值过大（最大 1000000）"),
])
def test_not_whole_numbers_are_refused_never_guessed(value, reason):
    with pytest.raises(CellError) as info:
        whole_number(value)
    assert str(info.value) == reason


def test_scientific_notation_text_is_no_whole_number():
    with pytest.raises(CellError):
        whole_number("1e2")


# --- files that try to cost more than they hold ------------------------------------------


def test_rows_past_the_cap_refuse_the_file_with_the_row_number():
    text = "客户名称,手机\n" + "".join(f"公司{i},1380000{i:04d}\n" for i in range(6))
    assert len(read_table(text.encode(), "a.csv", COLUMNS, max_rows=6).rows) == 6
    with pytest.raises(TableError) as info:
        read_table(text.encode(), "a.csv", COLUMNS, max_rows=5)
    assert str(info.value) == "文件超过 5 行（第 7 行仍有内容），请拆分成几个文件分别导入"


def test_the_header_is_checked_before_the_rows_are_read():
    # Missing columns are named even though the rows below would also break the cap.
    text = "客户名称,备注\n" + "甲公司,x\n" * 50
    with pytest.raises(TableError, match="缺少必需的列：手机"):
        read_table(text.encode(), "a.csv", COLUMNS, required=["phone"], max_rows=5)


def with_sheet_xml(data: bytes, old: bytes, new: bytes) -> bytes:
    """The workbook with one change in its first sheet's XML (openpyxl would expand a
    huge merged range into cells while writing it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert old in body
                body = body.replace(old, new)
            dst.writestr(item, body)
    return out.getvalue()


def test_a_merged_range_over_the_whole_sheet_fills_only_the_rows_that_exist():
    # C2:XFD1048576: expanding the range cell by cell would take gigabytes.
    data = xlsx_bytes([["客户名称", "手机", "负责人"], ["甲公司", "13800000000", "张三"],
                       ["乙公司", "13900000000", None]], merge=["C2:C3"])
    data = with_sheet_xml(data, b'ref="C2:C3"', b'ref="C2:XFD1048576"')
    rows = read_table(data, "a.xlsx", COLUMNS).rows
    assert [(r.number, r.values["owner"]) for r in rows] == [(2, "张三"), (3, "张三")]


def test_an_empty_template_sheet_gives_way_to_a_later_sheet_with_rows():
    book = Workbook()
    book.active.title = "模板"
    book.active.append(["客户名称", "手机"])
    data_sheet = book.create_sheet("三月展会")
    data_sheet.append(["客户名称", "手机"])
    data_sheet.append(["甲公司", "13800000000"])
    out = io.BytesIO()
    book.save(out)
    assert only_row(read_table(out.getvalue(), "a.xlsx", COLUMNS)) == \
        (2, {"company": "甲公司", "phone": "13800000000"})


def test_a_second_phone_column_fills_the_landline_and_other_repeats_are_reported():
    columns = [*COLUMNS[:2], Column("landline", ("座机",)), *COLUMNS[3:]]
    columns[1] = Column("phone", ("手机", "电话", "phone"), overflow="landline")
    text = "客户名称,手机,电话,客户名称\n甲公司,13800000000,0755-12345678,乙公司\n"
    table = read_table(text.encode(), "a.csv", columns)
    assert only_row(table) == (2, {"company": "甲公司", "phone": "13800000000",
                                   "landline": "0755-12345678"})
    assert table.repeated == ["客户名称"]
    # With a 座机 column of its own, a second phone column is a repeat, not a landline.
    text = "客户名称,手机,座机,电话\n甲公司,13800000000,0755-12345678,13900000000\n"
    table = read_table(text.encode(), "a.csv", columns)
    assert table.repeated == ["电话"] and table.rows[0].values["phone"] == "13800000000"


SST_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
SST_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"


def with_shared_strings(data: bytes, replace: dict[bytes, bytes] | None = None) -> bytes:
    """The workbook as Excel writes it: text cells as indexes into xl/sharedStrings.xml
    (openpyxl writes them inline); `replace` changes a string's text on the way."""
    strings: list[bytes] = []

    def shared(match: re.Match) -> bytes:
        strings.append(match.group(2))
        return b'<c r="%s" t="s"><v>%d</v></c>' % (match.group(1), len(strings) - 1)

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename.startswith("xl/worksheets/sheet"):
                body = re.sub(rb'<c r="([A-Z]+\d+)" t="inlineStr"><is><t>(.*?)</t></is></c>',
                              shared, body)
            elif item.filename == "[Content_Types].xml":
                body = body.replace(b"</Types>", b'<Override PartName="/xl/sharedStrings.xml"'
                                    b' ContentType="%s"/></Types>' % SST_TYPE.encode())
            elif item.filename == "xl/_rels/workbook.xml.rels":
                body = body.replace(b"</Relationships>", b'<Relationship Id="rIdSST" Type="%s"'
                                    b' Target="sharedStrings.xml"/></Relationships>'
                                    % SST_REL.encode())
            dst.writestr(item, body)
        texts = [(replace or {}).get(t, t) for t in strings]
        dst.writestr("xl/sharedStrings.xml", b'<?xml version="1.0" encoding="UTF-8"?>'
                     b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                     + b"".join(b"<si><t>%s</t></si>" % t for t in texts) + b"</sst>")
    return out.getvalue()


def note_sheet(note: bytes) -> bytes:
    """One lead whose 备注 is `note`, in a shared string as Excel stores it."""
    data = xlsx_bytes([["客户名称", "手机", "备注"], ["甲公司", "13800000001", "NOTE"]])
    return with_shared_strings(data, {b"NOTE": note})


NOTE_COLUMNS = [*COLUMNS, Column("note", ("备注",))]


def test_excel_shared_strings_are_read_like_openpyxl_reads_them():
    from openpyxl.reader.strings import read_string_table

    rich = ("</t><r><t>甲</t></r><r><rPr><b/></rPr><t>公司</t></r>"
            "<rPh sb=\"0\" eb=\"1\"><t>ko</t></rPh><t>")  # runs, a phonetic guide
    data = with_shared_strings(xlsx_bytes([["客户名称", "手机"], ["RICH", "A & B_x005F_x000D_"]]),
                               {b"RICH": rich.encode()})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        part = archive.read("xl/sharedStrings.xml")
    assert tabular.shared_strings(io.BytesIO(part)) == read_string_table(io.BytesIO(part))
    assert only_row(read_table(data, "a.xlsx", COLUMNS)) == \
        (2, {"company": "甲公司", "phone": "A & B_x000D_"})


def test_a_zip_bomb_is_refused_before_anything_is_parsed():
    # 20 MB of one letter packs into about 20 KB: the tester's 200 MB cell, smaller.
    data = note_sheet(b"a" * 20_000_000)
    assert len(data) < 100_000
    with pytest.raises(TableError) as info:
        read_table(data, "a.xlsx", NOTE_COLUMNS)
    assert str(info.value).startswith("无法读取文件：解压后异常大（xl/sharedStrings.xml 压缩比 ")
    assert "疑似压缩炸弹" in str(info.value)


def test_a_workbook_that_inflates_past_the_cap_is_refused(monkeypatch):
    monkeypatch.setattr(tabular, "MAX_UNCOMPRESSED", 20_000)
    data = note_sheet(random.Random(7).randbytes(20_000).hex().encode())
    with pytest.raises(TableError, match="解压后超过 0 MB"):
        read_table(data, "a.xlsx", NOTE_COLUMNS)


def test_a_huge_cell_that_does_not_compress_is_cut_as_it_is_read():
    note = random.Random(7).randbytes(1_500_000).hex().encode()  # 3 MB, no bomb
    [row] = read_table(note_sheet(note), "a.xlsx", NOTE_COLUMNS).rows
    assert row.values["note"] == note[:tabular.MAX_CELL_CHARS].decode()
    csv_data = "客户名称,备注\n甲公司,".encode() + note[:100_000] + b"\n"
    [row] = read_table(csv_data, "a.csv", NOTE_COLUMNS).rows
    assert len(row.values["note"]) == tabular.MAX_CELL_CHARS


def test_a_csv_cell_past_the_csv_modules_limit_is_refused_in_chinese():
    data = "客户名称,备注\n甲公司,".encode() + b"a" * 200_000 + b"\n"
    with pytest.raises(TableError, match="第 2 行有单元格超过 131,072 个字符"):
        read_table(data, "a.csv", NOTE_COLUMNS)


def sheets_book(*sheets: tuple[str, list[list], str]) -> bytes:
    """A workbook of (title, rows, state) sheets in this order."""
    book = Workbook()
    book.remove(book.active)
    for title, rows, state in sheets:
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
        sheet.sheet_state = state
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_a_hidden_sheet_is_read_only_when_named():
    header = ["客户名称", "手机"]
    data = sheets_book(("旧名单", [header, ["旧公司", "13800000009"]], "hidden"),
                       ("下拉选项", [header, ["选项公司", "13800000008"]], "veryHidden"),
                       ("线索", [header, ["甲公司", "13800000001"]], "visible"))
    assert only_row(read_table(data, "a.xlsx", COLUMNS))[1]["company"] == "甲公司"
    named = read_table(data, "a.xlsx", COLUMNS, sheet="旧名单")
    assert only_row(named)[1]["company"] == "旧公司"


def test_rows_only_on_a_hidden_sheet_are_named_not_read_as_an_empty_file():
    header = ["客户名称", "手机"]
    data = sheets_book(("线索", [header], "visible"),
                       ("名单", [header, ["甲公司", "13800000001"]], "hidden"))
    with pytest.raises(TableError, match="数据可能在隐藏的工作表“名单”里"):
        read_table(data, "a.xlsx", COLUMNS)
    assert only_row(read_table(data, "a.xlsx", COLUMNS, sheet="名单"))[1]["company"] == "甲公司"
    # a header alone, nothing hidden: an empty table, as before
    assert read_table(sheets_book(("线索", [header], "visible")), "a.xlsx", COLUMNS).rows == []


def test_a_sheet_of_instructions_naming_the_columns_gives_way_to_the_data():
    instructions = [["列名", "说明"], ["客户名称", "必填，客户公司的全称"],
                    ["手机", "必填，11位手机号"], ["座机", "选填，带区号"]]
    data = sheets_book(("填写说明", instructions, "visible"),
                       ("线索", [["客户名称", "手机", "座机"], ["甲公司", "13800000001", None]],
                        "visible"))
    table = read_table(data, "a.xlsx", COLUMNS, required=["company", ("phone", "landline")])
    assert only_row(table) == (2, {"company": "甲公司", "phone": "13800000001",
                                   "landline": None})


def test_a_metadata_row_naming_one_column_above_the_header_is_passed_over():
    columns = [*COLUMNS, Column("source", ("来源",))]
    text = "来源,2024深圳展会\n客户名称,手机,来源\n甲公司,13800000001,展会\n"
    table = read_table(text.encode(), "a.csv", columns, required=["company", "phone"])
    assert table.header_row == 2
    assert only_row(table) == (3, {"company": "甲公司", "phone": "13800000001",
                                   "source": "展会"})
    data = xlsx_bytes([["来源", "2024深圳展会"], ["客户名称", "手机", "来源"],
                       ["甲公司", "13800000001", "展会"]])
    assert read_table(data, "a.xlsx", columns, required=["company"]).header_row == 2


def test_rows_holding_only_what_a_merged_range_carried_down_are_blank():
    # The tester's sheet: two leads, then A2:A6 and D2:D6 merged; rows 4–6 have no cell
    # of their own and are no leads.
    data = xlsx_bytes([["客户名称", "手机", "座机", "负责人"],
                       ["甲公司", "13800000001", None, "张三"],
                       [None, "13800000002", None, None]], merge=["A2:A6", "D2:D6"])
    rows = read_table(data, "a.xlsx", COLUMNS).rows
    assert [(r.number, r.values["company"], r.values["owner"]) for r in rows] == [
        (2, "甲公司", "张三"), (3, "甲公司", "张三")]


def with_empty_rows(data: bytes, first: int, last: int, then: bytes = b"") -> bytes:
    """The first sheet with formatted empty rows first..last, and `then` after them."""
    rows = b"".join(b'<row r="%d" spans="1:3" s="1" customFormat="1"/>' % n
                    for n in range(first, last + 1))
    return with_sheet_xml(data, b"</sheetData>", rows + then + b"</sheetData>")


def test_a_million_formatted_empty_rows_stop_the_reading_after_a_long_blank_run():
    data = with_empty_rows(xlsx_bytes([["客户名称", "手机"], ["甲公司", "13800000001"]]),
                           3, 1_048_576)
    table = read_table(data, "a.xlsx", COLUMNS)
    assert [r.number for r in table.rows] == [2]
    assert table.stopped_at == 3


def test_rows_after_the_blank_run_are_not_read_and_the_stop_is_reported(monkeypatch):
    monkeypatch.setattr(tabular, "BLANK_RUN", 20)
    later = '<row r="40"><c r="A40" t="inlineStr"><is><t>乙公司</t></is></c></row>'.encode()
    data = with_empty_rows(xlsx_bytes([["客户名称", "手机"], ["甲公司", "13800000001"]]),
                           3, 39, later)
    table = read_table(data, "a.xlsx", COLUMNS)
    assert ([r.number for r in table.rows], table.stopped_at) == ([2], 3)
    text = "客户名称,手机\n甲公司,1\n" + "\n" * 30 + "乙公司,2\n"
    table = read_table(text.encode(), "a.csv", COLUMNS)
    assert ([r.number for r in table.rows], table.stopped_at) == ([2], 3)
    monkeypatch.setattr(tabular, "BLANK_RUN", 40)
    assert [r.number for r in read_table(data, "a.xlsx", COLUMNS).rows] == [2, 40]


def test_an_xlsx_renamed_to_csv_is_named_as_an_xlsx():
    data = xlsx_bytes([["客户名称", "手机"], ["甲公司", "13800000001"]])
    with pytest.raises(TableError, match="文件内容是 xlsx 表格，扩展名却是“.csv”"):
        read_table(data, "a.csv", COLUMNS)


def test_a_sheet_cannot_be_named_for_a_csv():
    with pytest.raises(TableError, match="csv 文件只有一张表，不能指定工作表“线索”"):
        read_table(C17_TEXT.encode(), "a.csv", COLUMNS, sheet="线索")


@pytest.mark.parametrize("value", ["²", "1²", "٣", "-0", "－0", "-0.0"])
def test_digits_of_other_forms_and_minus_zero_are_no_whole_numbers(value):
    with pytest.raises(CellError, match="^应为不小于0的整数$"):
        whole_number(value)


def test_zero_width_spaces_around_a_cell_are_nothing():
    text = "客户名称,手机\n\u200b,13800000001\n\u200b甲公司\u200d,13800000002\n"
    rows = read_table(text.encode(), "a.csv", COLUMNS).rows
    assert [r.values["company"] for r in rows] == [None, "甲公司"]


def _rich_inline(data: bytes) -> bytes:
    """甲公司 written as two rich-text runs with a phonetic guide, inline in the sheet."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                body = body.replace(
                    "<is><t>甲公司</t></is>".encode(),
                    "<is><r><t>甲</t></r><r><rPr><b/></rPr><t>公司</t></r>"
                    '<rPh sb="0" eb="1"><t>ko</t></rPh></is>'.encode())
            dst.writestr(item, body)
    return out.getvalue()


def test_the_fast_row_reader_gives_what_openpyxl_gives():
    from openpyxl import load_workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["客户名称", "数", "小数", "日期", "时间", "是否", "公式", "错误", None, "远列"])
    sheet.append(["甲公司", 13800000000, 2.5, datetime(2024, 1, 2), datetime(2024, 1, 2, 9, 30),
                  True, "=1+1", "#N/A", None, "x"])
    sheet.append([None, -3, 1e-7, None, None, False, None, None, None, None])
    sheet["L5"] = "后面的行"  # a row after a missing one, a cell past the others
    sheet["B6"] = 45292
    sheet["B6"].number_format = "yyyy-mm-dd"  # a number shown as a date
    out = io.BytesIO()
    book.save(out)
    for data in (out.getvalue(), with_shared_strings(out.getvalue()),
                 _rich_inline(out.getvalue())):
        expected = load_workbook(io.BytesIO(data), read_only=True, data_only=True).active
        wanted = {number: [v for v in values]
                  for number, values in enumerate(expected.iter_rows(values_only=True), 1)
                  if any(v is not None for v in values)}
        wanted[2][6] = tabular.UNCOMPUTED  # =1+1 was never computed: not an empty cell
        opened = tabular._open_workbook(data)
        got = {number: values for number, values in
               tabular.sheet_rows(opened, opened.worksheets[0])}
        assert set(got) == set(wanted) == {1, 2, 3, 5, 6}
        for number, values in got.items():
            assert values == wanted[number][:len(values)], number
            assert all(v is None for v in wanted[number][len(values):])
    assert got[2][0] == "甲公司" and got[6][1] == datetime(2024, 1, 1)
