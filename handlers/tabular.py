"""Reading spreadsheets people send: csv (UTF-8, UTF-8 with BOM, GBK) and xlsx.

Owns turning a file into numbered rows of cell values keyed by field, plus the cell
parsers imports share; what a field means is the importer's job (roster, leads).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, time
from itertools import chain, takewhile
from pathlib import Path
from typing import IO, NamedTuple
from xml.parsers import expat

# A cell as the file holds it: text, a whole number, a fraction, a date, a flag, nothing.
CellValue = str | int | float | datetime | date | time | bool | None

T_UNREADABLE = "无法读取文件：{why}"
T_EXCEL_ERROR = "是 Excel 的错误值“{code}”（公式出错），请改成实际内容"
T_UNCOMPUTED = "是没有计算结果的公式，请用 Excel 打开、保存后再导入，或改成实际内容"
T_UNKNOWN_FORMAT = "不支持的文件格式“{ext}”，请使用 .xlsx 或 .csv"
T_XLS = "不支持旧版 .xls 格式，请在 Excel 中另存为 .xlsx 或 .csv"
T_ENCRYPTED = "文件已加密或是旧版 .xls 格式，请取消密码并另存为 .xlsx 或 .csv"
T_BAD_XLSX = "不是有效的 .xlsx 文件"
T_NO_SHEET = "找不到工作表“{name}”（有：{names}）"
T_EMPTY_FILE = "文件是空的"
T_ONLY_HIDDEN = ("没有读到数据行，数据可能在隐藏的工作表“{names}”里：请在 Excel 中取消隐藏"
                 "（命令行也可以用 --sheet 指定）")
T_NO_HEADER = "找不到表头行（前 {n} 行中没有可识别的列名）"
T_MISSING = "缺少必需的列：{names}"
T_TOO_MANY_ROWS = "文件超过 {limit} 行（第 {row} 行仍有内容），请拆分成几个文件分别导入"
T_BAD_TEXT = "无法识别文件的文字编码"
T_BAD_TEXT_AT = ("无法识别文件的文字编码：第 {line} 行附近的文字既不是 UTF-8 也不是 GBK"
                 "（可能混入了另一种编码的内容），请在 Excel 中另存为“CSV UTF-8”")
T_NUL_AT = ("第 {line} 行含有空字符（一种看不见的特殊字符），文件可能已损坏或不是文本文件，"
            "请在 Excel 中另存为 .csv 或 .xlsx")
T_NOT_FOUND = "找不到文件 {path}"
T_XLSX_AS_CSV = "文件内容是 xlsx 表格，扩展名却是“{ext}”，请把扩展名改为 .xlsx 后重新导入"
T_SHEET_IN_CSV = "csv 文件只有一张表，不能指定工作表“{name}”"
T_ZIP_BOMB = "解压后异常大（{part} 压缩比 {ratio}:1），疑似压缩炸弹，已拒绝读取"
T_TOO_BIG = "解压后超过 {mb} MB，请拆分成几个文件分别导入"
T_CSV_CELL = "第 {row} 行有单元格超过 {limit} 个字符（也可能是某个引号没有成对）"

T_WHOLE = "应为不小于0的整数"
T_PLACEHOLDER = "应为不小于0的整数，不能是占位符“{text}”"
T_NEGATIVE = "应为不小于0的整数，不能是负数"
T_FRACTION = "应为整数，不能是小数"
T_TOO_LARGE = "数值过大（最大 {limit}）"

CSV_EXTENSIONS = (".csv", ".txt", ".tsv")
XLSX_EXTENSIONS = (".xlsx", ".xlsm")
# The compound-file signature: old .xls, and every password-protected OOXML workbook.
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_DELIMITERS = (",", "\t", ";")
# Where the header row may be: title rows above it are common in hand-made sheets.
HEADER_SEARCH_ROWS = 10
# The most rows a file may have below its header. A sheet can claim a million rows in a
# few megabytes (one cell each); past this the file is refused before it costs memory.
MAX_ROWS = 100_000
# Cells read per row: a merged range or a stray cell in column XFD must not make every
# row 16,384 cells wide. No import knows anywhere near this many columns.
MAX_COLUMNS = 200
# The most characters read from one cell: no field any import knows is half as long (a
# lead's note holds 2,000). A longer cell is cut here, so a 200 MB cell costs nothing
# downstream; the field's own length check refuses the cut value with its limit.
MAX_CELL_CHARS = 4096
# An xlsx is a zip of XML parts. Refused before anything is parsed: parts that inflate
# past this in all (a 100,000-row sheet of 13 columns is about 60 MB), or a part larger
# than RATIO_FLOOR that inflates more than MAX_RATIO times (spreadsheet XML inflates 5 to
# 20 times; a zip bomb of one repeated letter 1,000 times).
MAX_UNCOMPRESSED = 512 * 1024 * 1024
MAX_RATIO = 100
RATIO_FLOOR = 1024 * 1024
# Reading stops after this many blank rows in a row: a sheet can hold a million formatted
# empty rows, which openpyxl parses one by one (and keeps, each an emptied element).
BLANK_RUN = 10_000
# Merged ranges taken from one sheet: more than any hand-made sheet has.
MAX_MERGED = 100_000
_TRIM = " \t\r\n\u3000\ufeff\u00a0\u200b\u200c\u200d\u2060"
# Placeholders people type for "nothing here" in a numeric column.
PLACEHOLDERS = frozenset({"-", "—", "–", "--", "——", "/", "无", "n/a", "na", "null"})
# What Excel shows (and a csv saved from Excel holds) where a formula failed.
EXCEL_ERRORS = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A",
                          "#GETTING_DATA", "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!"})
# A formula cell saved without its result (files written by programs, never by Excel: no
# <v>, or an empty one in a number cell, as a number cannot be empty): the reader gives this
# instead of an empty cell, so the row is refused, not read as blank.
UNCOMPUTED = "#UNCOMPUTED!"


def formula_trouble(value: object) -> str | None:
    """Why a cell holds no value of its own: an Excel error (#N/A …) or a formula never
    computed; None for any other cell."""
    if value == UNCOMPUTED:
        return T_UNCOMPUTED
    if isinstance(value, str) and clean_text(value).upper() in EXCEL_ERRORS:
        return T_EXCEL_ERROR.format(code=clean_text(value).upper())
    return None


class TableError(Exception):
    """The file itself cannot be read (format, encoding, header); the message is Chinese."""


class CellError(ValueError):
    """One cell's value is refused; the message is the reason shown to the user."""


@dataclass(slots=True, frozen=True)
class Column:
    """A field the importer knows, and the headers people write for it."""

    field: str
    aliases: tuple[str, ...]
    # A second column with one of these headers fills this field instead (手机 and 电话
    # side by side are a mobile and a landline), when the file has no column for it.
    overflow: str | None = None

    @property
    def title(self) -> str:
        """The header the user reads in messages: the first alias (Chinese)."""
        return self.aliases[0] if self.aliases else self.field


@dataclass(slots=True)
class TableRow:
    number: int  # as the spreadsheet shows it: the header row is row 1 in a plain file
    values: dict[str, CellValue]


@dataclass(slots=True)
class Table:
    header_row: int
    fields: list[str]  # the known fields found in the header, in file order
    rows: list[TableRow]
    ignored: list[str] = field(default_factory=list)  # headers no column knows
    repeated: list[str] = field(default_factory=list)  # a known field's second column
    # The first of BLANK_RUN blank rows after which the file was not read further.
    stopped_at: int | None = None

    def has(self, name: str) -> bool:
        return name in self.fields


class GridRow(NamedTuple):
    """A non-blank row as the file holds it, numbered as the spreadsheet shows it."""

    number: int
    cells: list[CellValue]
    # Cells (by index) whose value a merged range filled: not the row's own.
    inherited: frozenset[int] = frozenset()
    # Not a row: reading stopped here after BLANK_RUN blank rows (number is the first).
    end: bool = False


Grid = Iterator[GridRow]
Required = Sequence[str | tuple[str, ...]]


def clean_header(text: object) -> str:
    """Headers compare without BOM, surrounding ASCII or full-width spaces, width or case."""
    return unicodedata.normalize("NFKC", str(text).strip(_TRIM)).strip().casefold()


def clean_text(value: object) -> str:
    return str(value).strip(_TRIM)


def read_table_file(
    path: Path, columns: Sequence[Column], *, required: Required = (),
    sheet: str | None = None,
) -> Table:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise TableError(T_NOT_FOUND.format(path=path)) from None
    except OSError as exc:
        raise TableError(T_UNREADABLE.format(why=exc.strerror or type(exc).__name__)) from None
    return read_table(data, path.name, columns, required=required, sheet=sheet)


def header_lookup(columns: Sequence[Column]) -> dict[str, str]:
    """Cleaned header → field, for every alias and every field's own name."""
    lookup = {clean_header(alias): col.field for col in columns for alias in col.aliases}
    lookup.update({clean_header(col.field): col.field for col in columns})
    return lookup


def header_rank(
    cells: Sequence[CellValue], lookup: Mapping[str, str], required: Required = ()
) -> tuple[bool, int, int]:
    """How well a row serves as the header: (every required column named, how many
    required columns are named, how many known fields are named). A row naming no known
    field is no header at all (its rank's last number is 0)."""
    found = {lookup.get(clean_header(c)) for c in cells if c is not None} - {None}
    met = sum(1 for need in required
              if any(n in found for n in (need if isinstance(need, tuple) else (need,))))
    return met == len(required), met, len(found)


def best_header(
    rows: Sequence[Sequence[CellValue]], lookup: Mapping[str, str], required: Required = ()
) -> int | None:
    """The index of the row that names the most known columns, the required ones first;
    the earliest of equals; None when no row names any."""
    best, best_rank = None, (False, 0, 0)
    for index, cells in enumerate(rows):
        rank = header_rank(cells, lookup, required)
        if rank[2] and rank > best_rank:
            best, best_rank = index, rank
    return best


def read_table(
    data: bytes, filename: str, columns: Sequence[Column], *,
    required: Required = (), sheet: str | None = None, max_rows: int = MAX_ROWS,
) -> Table:
    """Read a csv or xlsx file into rows keyed by field; blank rows are skipped.

    `required` names fields whose column must be present; a tuple means one of them. The
    header is the row among the first HEADER_SEARCH_ROWS that names the most known
    columns (the required ones first); it is checked before any row below it is read,
    and a file with more than `max_rows` rows below its header is refused as it is read.
    A row whose known columns hold only values a merged range filled is blank.
    Raises TableError when the file cannot be read as a table.
    """
    lookup = header_lookup(columns)
    with closing(iter_grid(data, filename, sheet=sheet, header=lookup,
                           required=required)) as grid:
        top: list[GridRow] = []
        stopped_at = None
        for entry in grid:
            if entry.end:
                stopped_at = entry.number
                break
            top.append(entry)
            if len(top) >= HEADER_SEARCH_ROWS:
                break
        if not top:
            raise TableError(T_UNREADABLE.format(why=T_EMPTY_FILE))
        at = best_header([entry.cells for entry in top], lookup, required)
        if at is None:
            raise TableError(T_UNREADABLE.format(why=T_NO_HEADER.format(n=HEADER_SEARCH_ROWS)))
        number, header = top[at].number, top[at].cells
        positions, ignored, repeated = _header_positions(header, lookup, columns)
        titles = {col.field: col.title for col in columns}
        missing = [
            "/".join(titles.get(n, n) for n in (need if isinstance(need, tuple) else (need,)))
            for need in required
            if not any(n in positions for n in (need if isinstance(need, tuple) else (need,)))
        ]
        if missing:
            raise TableError(T_MISSING.format(names="、".join(missing)))
        rows = []
        for entry in chain(top[at + 1:], grid):
            if entry.end:
                stopped_at = entry.number
                break
            if entry.number - number > max_rows:
                raise TableError(T_TOO_MANY_ROWS.format(limit=f"{max_rows:,}",
                                                        row=entry.number))
            cells = entry.cells
            values = {
                name: cells[index] if index < len(cells) else None
                for name, index in positions.items()
            }
            if all(v is None or positions[name] in entry.inherited
                   for name, v in values.items()):
                # Blank: nothing filled, or only unknown columns, or only values a merged
                # range carried down into a row that has none of its own.
                continue
            rows.append(TableRow(entry.number, values))
    if not rows and sheet is None and Path(filename).suffix.lower() in XLSX_EXTENSIONS:
        hidden = hidden_sheets(data)
        if hidden:  # the rows were meant, and sit where only --sheet reads
            raise TableError(T_UNREADABLE.format(why=T_ONLY_HIDDEN.format(
                names="”“".join(hidden))))
    return Table(number, list(positions), rows, ignored, repeated, stopped_at)


def hidden_sheets(data: bytes) -> list[str]:
    """The names of a workbook's hidden sheets."""
    book = _open_workbook(data)
    try:
        return [ws.title for ws in book.worksheets if ws.sheet_state != "visible"]
    finally:
        book.close()


def _header_positions(
    header: list[CellValue], lookup: Mapping[str, str], columns: Sequence[Column]
) -> tuple[dict[str, int], list[str], list[str]]:
    """Field → column index; the headers no column knows; the repeated ones left out."""
    overflow = {col.field: col.overflow for col in columns if col.overflow}
    found = {lookup.get(clean_header(t)) for t in header if t is not None}
    positions: dict[str, int] = {}
    ignored: list[str] = []
    repeated: list[str] = []
    for index, title in enumerate(header):
        if title is None or clean_text(title) == "":
            continue
        known = lookup.get(clean_header(title))
        if known is None:
            ignored.append(clean_text(title))
        elif known not in positions:
            positions[known] = index
        elif (spill := overflow.get(known)) and spill not in found and spill not in positions:
            positions[spill] = index
        else:
            repeated.append(clean_text(title))
    return positions, ignored, repeated


def read_grid(
    data: bytes, filename: str, *, sheet: str | None = None,
    header: Mapping[str, str] | None = None, required: Required = (),
) -> list[GridRow]:
    """Every non-blank row with its spreadsheet row number (all of iter_grid)."""
    with closing(iter_grid(data, filename, sheet=sheet, header=header,
                           required=required)) as rows:
        return [row for row in rows if not row.end]


def iter_grid(
    data: bytes, filename: str, *, sheet: str | None = None,
    header: Mapping[str, str] | None = None, required: Required = (),
) -> Grid:
    """Every non-blank row with its spreadsheet row number, cells as the file holds them
    (at most MAX_CELL_CHARS characters each), read as it is needed; after BLANK_RUN blank
    rows in a row, one last GridRow with `end` set, and nothing more.

    Without `sheet`, a workbook is read from its visible sheet whose header (by `header`,
    cleaned header → field, and `required`) is complete and has rows below it, else the
    best of the rest (header_rank), else its first visible sheet; a hidden sheet is read
    only when named.
    """
    ext = Path(filename).suffix.lower()
    if ext == ".xls":
        raise TableError(T_UNREADABLE.format(why=T_XLS))
    if data.startswith(_CFB_MAGIC):
        raise TableError(T_UNREADABLE.format(why=T_ENCRYPTED))
    if ext in XLSX_EXTENSIONS:
        yield from _xlsx_grid(data, sheet, header or {}, required)
    elif ext in CSV_EXTENSIONS:
        if data.startswith(_ZIP_MAGIC):
            raise TableError(T_UNREADABLE.format(why=T_XLSX_AS_CSV.format(ext=ext)))
        if sheet is not None:
            raise TableError(T_UNREADABLE.format(why=T_SHEET_IN_CSV.format(name=sheet)))
        yield from _csv_grid(data)
    else:
        raise TableError(T_UNREADABLE.format(why=T_UNKNOWN_FORMAT.format(ext=ext or filename)))


# --- csv ---------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """BOM first (UTF-8, UTF-16), then strict UTF-8, then GB18030 (a superset of GBK).

    A file that is UTF-8 up to a line of another encoding (rows pasted from a GBK file)
    is refused naming that line: read as GB18030 it would turn to nonsense instead."""
    if data.startswith(codecs.BOM_UTF8):
        raw, encoding = data[len(codecs.BOM_UTF8):], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raw, encoding = data, "utf-16"
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not data[:exc.start].isascii():  # Chinese read as UTF-8 before it
                raise _undecodable(data, exc.start) from None
        raw, encoding = data, "gb18030"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding == "gb18030":
            raise _undecodable(data, exc.start) from None
        raise TableError(T_UNREADABLE.format(why=T_BAD_TEXT)) from None


def _undecodable(data: bytes, at: int) -> TableError:
    line = data.count(b"\n", 0, at) + 1
    return TableError(T_UNREADABLE.format(why=T_BAD_TEXT_AT.format(line=line)))


def _sniff_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into the most columns, `,` on a tie."""
    sample = text[:65536]
    best, best_width = ",", 1
    for delimiter in _DELIMITERS:
        widths = [len(r) for r in _records(sample, delimiter, limit=HEADER_SEARCH_ROWS)]
        width = max(widths, default=1)
        if width > best_width:
            best, best_width = delimiter, width
    return best


def _records(text: str, delimiter: str, limit: int | None = None) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out = []
    try:
        for record in reader:
            out.append(record)
            if limit is not None and len(out) >= limit:
                break
    except csv.Error:
        if limit is None:
            raise
    return out


def _csv_grid(data: bytes) -> Grid:
    text = decode_text(data)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TableError(T_UNREADABLE.format(why=T_NUL_AT.format(line=line)))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
    # Excel shows one record as one row, even when a quoted cell holds a line break.
    number = blank = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            why = str(exc)
            if "field larger than field limit" in why:  # the csv module's own cap
                why = T_CSV_CELL.format(row=number + 1, limit=f"{csv.field_size_limit():,}")
            raise TableError(T_UNREADABLE.format(why=why)) from None
        number += 1
        cells: list[CellValue] = [_csv_cell(c) for c in record[:MAX_COLUMNS]]
        if any(c is not None for c in cells):
            blank = 0
            yield GridRow(number, cells)
        else:
            blank += 1
            if blank >= BLANK_RUN:
                yield GridRow(number - blank + 1, [], end=True)
                return


def _csv_cell(text: str) -> str | None:
    text = text[:MAX_CELL_CHARS + 64].strip(_TRIM)[:MAX_CELL_CHARS]
    return text or None


# --- xlsx --------------------------------------------------------------------------


def check_archive(archive: zipfile.ZipFile) -> None:
    """Refuse a workbook whose parts would inflate too far, before any part is read.

    The sizes are the archive's own claims; zipfile stops each part at its claimed size.
    """
    total = 0
    for item in archive.infolist():
        total += item.file_size
        if item.file_size > RATIO_FLOOR and \
                item.file_size > MAX_RATIO * max(1, item.compress_size):
            ratio = item.file_size // max(1, item.compress_size)
            raise TableError(T_UNREADABLE.format(
                why=T_ZIP_BOMB.format(part=item.filename, ratio=f"{ratio:,}")))
    if total > MAX_UNCOMPRESSED:
        raise TableError(T_UNREADABLE.format(
            why=T_TOO_BIG.format(mb=MAX_UNCOMPRESSED // (1024 * 1024))))


def shared_strings(source: IO[bytes], limit: int = MAX_CELL_CHARS) -> list[str]:
    """A workbook's shared strings, each cut at `limit` characters while it is read.

    openpyxl builds every string whole (one cell of 200 MB is 200 MB, several times
    over); expat hands the text over in pieces, and past the limit they are dropped.
    The text is what openpyxl reads: the plain <t> and the rich-text runs' <t>, without
    the phonetic guides (<rPh>).
    """
    strings: list[str] = []
    pieces: list[str] = []
    size = 0
    depth = {"si": 0, "rPh": 0, "t": 0}

    def start(name: str, _attrs: object) -> None:
        nonlocal size
        local = name.rpartition("}")[2]
        if local in depth:
            depth[local] += 1
        if local == "si":
            pieces.clear()
            size = 0

    def end(name: str) -> None:
        local = name.rpartition("}")[2]
        if local in depth:
            depth[local] -= 1
        if local == "si":
            strings.append("".join(pieces).replace("x005F_", "")[:limit])

    def text(data: str) -> None:
        nonlocal size
        if depth["t"] and depth["si"] and not depth["rPh"] and size <= limit:
            pieces.append(data[:limit + 1 - size])
            size += len(pieces[-1])

    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.ParseFile(source)
    return strings


def _open_workbook(data: bytes):  # noqa: ANN202 - openpyxl's Workbook, untyped
    """The workbook in read-only mode, its shared strings read by shared_strings; its
    sheets are not sized on opening (sheet_rows reads the rows)."""
    from openpyxl.reader.excel import ExcelReader
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet
    from openpyxl.xml.constants import SHARED_STRINGS

    class Reader(ExcelReader):
        def read_strings(self) -> None:
            part = self.package.find(SHARED_STRINGS)
            if part is not None:
                with self.archive.open(part.PartName[1:]) as source:
                    self.shared_strings = shared_strings(source)

        def read_worksheets(self) -> None:
            # openpyxl's read-only sheet parses a sheet without a <dimension> (many
            # exporters write none) whole when it is opened, only to learn its size:
            # twice the reading. Its size is not needed here (sheet_rows reads the rows).
            class UnsizedSheet(ReadOnlyWorksheet):
                def _get_size(self) -> None:
                    return None

            for sheet, rel in self.parser.find_sheets():
                if rel.target in self.valid_files and "chartsheet" not in rel.Type:
                    worksheet = UnsizedSheet(self.wb, sheet.name, rel.target,
                                             self.shared_strings)
                    worksheet.sheet_state = sheet.state
                    self.wb._sheets.append(worksheet)

    reader = Reader(io.BytesIO(data), read_only=True, data_only=True)
    reader.read()
    reader.wb.shared_strings = reader.shared_strings
    return reader.wb


class _RowParser:
    """The rows of one worksheet part, parsed as they stream in (expat, no tree): about
    four times faster than openpyxl's read-only cells, with the same values (data_only:
    a formula's cached result; numbers in a date format as datetimes)."""

    def __init__(self, strings: Sequence[str], date_formats: Collection[int],
                 timedelta_formats: Collection[int], epoch: datetime) -> None:
        self.strings, self.dates, self.epoch = strings, date_formats, epoch
        self.timedeltas = timedelta_formats
        self.done: list[tuple[int, list[object]]] = []
        self.number = 0
        self.values: list[object] = []
        self.column = 0
        self.kind = "n"
        self.style = 0
        self.pieces: list[str] = []
        self.size = 0
        self.taking = False  # inside <v>, or a <t> of an inline string outside <rPh>
        self.inline = self.phonetic = 0
        self.formula = self.cached = False  # the cell holds <f>, <v>
        self.locals: dict[str, str] = {}  # element name as written → without its prefix
        parser = expat.ParserCreate()  # namespaces unprocessed: a prefix is cut off below
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.text
        self.parser = parser

    def local(self, name: str) -> str:
        found = self.locals.get(name)
        if found is None:
            found = self.locals[name] = name.rpartition(":")[2]
        return found

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = self.locals.get(name) or self.local(name)
        if local == "c":
            ref = attrs.get("r")
            self.column = _column_of(ref) if ref else self.column + 1
            self.kind = attrs.get("t", "n")
            style = attrs.get("s")
            self.style = int(style) if style else 0
            self.pieces.clear()
            self.size = 0
            self.formula = self.cached = False
        elif local == "f":
            self.formula = True
        elif local == "v":
            self.taking = self.cached = True
        elif local == "t":
            self.taking = self.inline > 0 and not self.phonetic
        elif local == "is":
            self.inline += 1
        elif local == "rPh":
            self.phonetic += 1
        elif local == "row":
            number = attrs.get("r")
            self.number = int(number) if number else self.number + 1
            self.values = []
            self.column = 0

    def end(self, name: str) -> None:
        local = self.locals.get(name) or self.local(name)
        if local in ("v", "t"):
            self.taking = False
        elif local == "is":
            self.inline -= 1
        elif local == "rPh":
            self.phonetic -= 1
        elif local == "c":
            if self.column <= MAX_COLUMNS:
                value = self.value()
                if value is None and self.formula and (not self.cached or self.kind == "n"):
                    value = UNCOMPUTED
                if value is not None:
                    if len(self.values) < self.column:
                        self.values.extend([None] * (self.column - len(self.values)))
                    self.values[self.column - 1] = value
        elif local == "row":
            self.done.append((self.number, self.values))

    def text(self, data: str) -> None:
        if self.taking and self.size <= MAX_CELL_CHARS:
            self.pieces.append(data[:MAX_CELL_CHARS + 1 - self.size])
            self.size += len(self.pieces[-1])

    def value(self) -> object:
        from openpyxl.utils.datetime import from_excel, from_ISO8601

        text = "".join(self.pieces)
        kind = self.kind
        if kind == "inlineStr":
            return text if self.pieces else None
        if not text:
            return None
        try:
            if kind == "n":
                number: int | float = float(text) if any(c in text for c in ".eE") \
                    else int(text)
                if self.style in self.dates:
                    try:
                        return from_excel(number, self.epoch,
                                          timedelta=self.style in self.timedeltas)
                    except (OverflowError, ValueError):
                        return "#VALUE!"
                return number
            if kind == "s":
                index = int(text)
                return self.strings[index] if 0 <= index < len(self.strings) else None
            if kind == "b":
                return bool(int(text))
            if kind == "d":
                return from_ISO8601(text)
        except ValueError:
            return text
        return text  # str (a formula's text), e (an error value)


_COLUMNS: dict[str, int] = {}


def _column_of(ref: str) -> int:
    """B12 → 2, AA3 → 27 (0 for a reference without letters)."""
    letters = ref.rstrip("0123456789$")
    column = _COLUMNS.get(letters)
    if column is None:
        column = 0
        for letter in letters.upper().lstrip("$"):
            if not "A" <= letter <= "Z":
                return 0
            column = column * 26 + ord(letter) - 64
        if len(_COLUMNS) < 20_000:
            _COLUMNS[letters] = column
    return column


def sheet_rows(book, worksheet) -> Iterator[tuple[int, list[object]]]:  # noqa: ANN001
    """(row number, values) of every row the sheet's XML holds, in order, read as it
    streams; rows it does not hold are not yielded. Values as openpyxl gives them with
    values_only, each row at most MAX_COLUMNS wide, each text at most MAX_CELL_CHARS."""
    rows = _RowParser(getattr(book, "shared_strings", ()), book._date_formats,
                      book._timedelta_formats, book.epoch)
    with book._archive.open(worksheet._worksheet_path) as part:
        while chunk := part.read(1 << 16):
            rows.parser.Parse(chunk, False)
            if rows.done:
                yield from rows.done
                rows.done = []
        rows.parser.Parse(b"", True)
    yield from rows.done


def _xlsx_grid(
    data: bytes, sheet: str | None, header: Mapping[str, str], required: Required
) -> Grid:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise TableError(T_UNREADABLE.format(why=T_BAD_XLSX))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_archive(archive)
    except zipfile.BadZipFile:
        raise TableError(T_UNREADABLE.format(why=T_BAD_XLSX)) from None
    # Read-only mode streams the sheet's XML: 50,000 rows of 15 cells in a few seconds and
    # without the whole sheet in memory (a full load took about 14 s and 150 MB).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles it drops
            book = _open_workbook(data)
    except TableError:
        raise
    except Exception as exc:  # a broken archive raises many kinds; all mean "unreadable"
        why = f"{T_BAD_XLSX}（{type(exc).__name__}）"
        raise TableError(T_UNREADABLE.format(why=why)) from None
    try:
        sheets = [ws for ws in book.worksheets if hasattr(ws, "iter_rows")]
        # Hidden sheets hold lookup lists and old versions: read only when named.
        visible = [ws for ws in sheets if ws.sheet_state == "visible"] or sheets
        if sheet is not None:
            if sheet not in book.sheetnames:
                names = "、".join(book.sheetnames)
                raise TableError(T_UNREADABLE.format(why=T_NO_SHEET.format(name=sheet,
                                                                            names=names)))
            worksheet = book[sheet]
        elif not visible:
            raise TableError(T_UNREADABLE.format(why=T_EMPTY_FILE))
        else:
            worksheet = _sheet_with_header(visible, header, required)
        yield from _worksheet_grid(book, worksheet)
    except TableError:
        raise
    except Exception as exc:  # a damaged sheet inside a sound archive
        why = f"{T_BAD_XLSX}（{type(exc).__name__}）"
        raise TableError(T_UNREADABLE.format(why=why)) from None
    finally:
        book.close()


def _sheet_with_header(  # noqa: ANN201 - openpyxl's worksheets are untyped
    sheets: list, header: Mapping[str, str], required: Required  # noqa: ANN001
):
    """The sheet whose best header row (best_header) is complete and has a row below
    it; else the one whose header comes nearest to that (an empty template sheet before
    a sheet of instructions that names the columns one a row); else the first sheet."""
    if len(sheets) == 1 or not header:
        return sheets[0]
    best, best_key = sheets[0], None
    for worksheet in sheets:
        with closing(sheet_rows(worksheet.parent, worksheet)) as numbered:
            rows = [values for _, values in takewhile(
                lambda row: row[0] <= 2 * HEADER_SEARCH_ROWS, numbered)]
        rows = [r for r in rows if any(xlsx_cell(v) is not None for v in r)]
        at = best_header(rows[:HEADER_SEARCH_ROWS], header, required)
        if at is None:
            continue
        complete, met, known = header_rank(rows[at], header, required)
        key = (complete, len(rows) > at + 1, met, known)
        if best_key is None or key > best_key:
            best, best_key = worksheet, key
    return best


_MERGE_REF = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Za-z]+\d+):([A-Za-z]+\d+)"')


def merged_ranges(book, worksheet) -> list[tuple[int, int, int, int]]:  # noqa: ANN001
    """(min_row, min_col, max_row, max_col) of every merged range of a read-only sheet
    (the first MAX_MERGED of them).

    Read-only mode does not parse <mergeCells>, which follows the rows in the sheet's XML;
    scanning the part's bytes for them costs milliseconds.
    """
    from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

    # The part's path inside the archive: openpyxl keeps it on the read-only sheet.
    found: list[tuple[int, int, int, int]] = []
    tail = b""
    with book._archive.open(worksheet._worksheet_path) as part:
        while len(found) < MAX_MERGED and (chunk := part.read(1 << 20)):
            text = tail + chunk
            for match in _MERGE_REF.finditer(text):
                (c1, r1), (c2, r2) = (coordinate_from_string(m.decode())
                                      for m in match.groups())
                found.append((r1, column_index_from_string(c1), r2,
                              column_index_from_string(c2)))
            cut = text.rfind(b"<")
            tail = text[cut:] if cut >= 0 and b">" not in text[cut:] else b""
    return found[:MAX_MERGED]


def _worksheet_grid(book, worksheet) -> Grid:  # noqa: ANN001
    """The sheet's rows, at most MAX_COLUMNS cells each, merged ranges filled.

    A merged range's top-left value fills the cells below it in its first column, marked
    as inherited, and the rest of the range is empty; a row with no value of its own is
    blank. Ranges are followed
    row by row (sorted by their first row), so a range covering a million rows costs
    nothing until those rows are read. Reading stops after BLANK_RUN blank rows.
    """
    ranges = sorted(
        (r1, c1, r2, min(c2, MAX_COLUMNS)) for r1, c1, r2, c2 in merged_ranges(book, worksheet)
        if c1 <= MAX_COLUMNS
    )
    pending = 0  # ranges[:pending] have begun
    active: list[tuple[int, int, int, int]] = []
    top_left: dict[tuple[int, int], object] = {}
    last = 0  # the last row with a value of its own
    for number, values in sheet_rows(book, worksheet):
        if number - last > BLANK_RUN:  # rows the XML does not hold are blank too
            yield GridRow(last + 1, [], end=True)
            return
        inherited: set[int] = set()
        while pending < len(ranges) and ranges[pending][0] <= number:
            active.append(ranges[pending])
            pending += 1
        if active:
            active = [r for r in active if r[2] >= number]
            for r1, c1, _r2, c2 in active:
                if len(values) < c2:
                    values.extend([None] * (c2 - len(values)))
                if number == r1:
                    top_left[(r1, c1)] = values[c1 - 1]
                # Down its first column, as the rows below share the value; the columns
                # to its right are empty, as Excel keeps them (a range over 行业 and
                # 紧急程度 does not give 紧急程度 the 行业).
                for col in range(c1, c2 + 1):
                    if (number, col) != (r1, c1):
                        values[col - 1] = top_left.get((r1, c1)) if col == c1 else None
                        inherited.add(col - 1)
        cells = [xlsx_cell(value) for value in values]
        if any(c is not None for i, c in enumerate(cells) if i not in inherited):
            last = number
            yield GridRow(number, cells, frozenset(inherited))
        elif number - last >= BLANK_RUN:
            yield GridRow(last + 1, [], end=True)
            return


def xlsx_cell(value: object) -> CellValue:
    """A numeric cell holding a whole number is that number, whatever Excel displays."""
    if value is None:
        return None
    if isinstance(value, str):
        return _csv_cell(value)
    if isinstance(value, bool | datetime | date | time):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    return _csv_cell(str(value))  # a timedelta or an error value, shown as text


# --- cell parsers shared by the importers ----------------------------------------


def cell_text(value: CellValue) -> str | None:
    """A cell as text: 13800000000 for a number cell, ISO for a date, None when blank."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    text = clean_text(value)
    return text or None


_DIGITS = re.compile(r"\d+", re.ASCII)
# Written out in digits: "1e2" in a text cell is no whole number anyone typed on purpose.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


def whole_number(value: CellValue, *, limit: int = 1_000_000) -> int | None:
    """A whole number ≥ 0, or None for an empty cell; anything else raises CellError.

    "-", "—", a negative number, "-0", a fraction or words are refused, never guessed;
    digits are ASCII or full-width (３), not ² or other scripts' digits.
    """
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, datetime | date | time):
        raise CellError(T_WHOLE)
    if isinstance(value, int | float):
        return _checked(value, limit)
    if any(ch.isnumeric() and not ("0" <= ch <= "9" or "０" <= ch <= "９")
           for ch in str(value)):
        raise CellError(T_WHOLE)  # NFKC would make ² a 2
    text = unicodedata.normalize("NFKC", str(value)).strip(_TRIM)
    if not text:
        return None
    if text.casefold() in PLACEHOLDERS:
        raise CellError(T_PLACEHOLDER.format(text=text))
    if _DIGITS.fullmatch(text):
        return _checked(int(text), limit)
    if _NUMBER.fullmatch(text):
        number = float(text)
        if number == 0 and text.startswith("-"):
            raise CellError(T_WHOLE)
        return _checked(number, limit)
    raise CellError(T_WHOLE)


def _checked(number: int | float, limit: int) -> int:
    if number < 0:
        raise CellError(T_NEGATIVE)
    if isinstance(number, float) and not number.is_integer():
        raise CellError(T_FRACTION)
    if number > limit:
        raise CellError(T_TOO_LARGE.format(limit=limit))
    return int(number)
