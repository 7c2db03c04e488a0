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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

# A cell as the file holds it: text, a whole number, a fraction, a date, a flag, nothing.
CellValue = str | int | float | datetime | date | time | bool | None

T_UNREADABLE = "无法读取文件：{why}"
T_UNKNOWN_FORMAT = "不支持的文件格式“{ext}”，请使用 .xlsx 或 .csv"
T_XLS = "不支持旧版 .xls 格式，请在 Excel 中另存为 .xlsx 或 .csv"
T_ENCRYPTED = "文件已加密或是旧版 .xls 格式，请取消密码并另存为 .xlsx 或 .csv"
T_BAD_XLSX = "不是有效的 .xlsx 文件"
T_NO_SHEET = "找不到工作表“{name}”（有：{names}）"
T_EMPTY_FILE = "文件是空的"
T_NO_HEADER = "找不到表头行（前 {n} 行中没有可识别的列名）"
T_MISSING = "缺少必需的列：{names}"
T_BAD_TEXT = "无法识别文件的文字编码"
T_NOT_FOUND = "找不到文件 {path}"

T_WHOLE = "应为不小于0的整数"
T_PLACEHOLDER = "应为不小于0的整数，不能是占位符“{text}”"
T_NEGATIVE = "应为不小于0的整数，不能是负数"
T_FRACTION = "应为整数，不能是小数"
T_TOO_LARGE = "数值过大（最大 {limit}）"

CSV_EXTENSIONS = (".csv", ".txt", ".tsv")
XLSX_EXTENSIONS = (".xlsx", ".xlsm")
# The compound-file signature: old .xls, and every password-protected OOXML workbook.
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_DELIMITERS = (",", "\t", ";")
# Where the header row may be: title rows above it are common in hand-made sheets.
HEADER_SEARCH_ROWS = 10
_TRIM = " \t\r\n\u3000\ufeff\u00a0"
# Placeholders people type for "nothing here" in a numeric column.
PLACEHOLDERS = frozenset({"-", "—", "–", "--", "——", "/", "无", "n/a", "na", "null"})


class TableError(Exception):
    """The file itself cannot be read (format, encoding, header); the message is Chinese."""


class CellError(ValueError):
    """One cell's value is refused; the message is the reason shown to the user."""


@dataclass(slots=True, frozen=True)
class Column:
    """A field the importer knows, and the headers people write for it."""

    field: str
    aliases: tuple[str, ...]


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

    def has(self, name: str) -> bool:
        return name in self.fields


def clean_header(text: object) -> str:
    """Headers compare without BOM, surrounding ASCII or full-width spaces, width or case."""
    return unicodedata.normalize("NFKC", str(text).strip(_TRIM)).strip().casefold()


def clean_text(value: object) -> str:
    return str(value).strip(_TRIM)


def read_table_file(
    path: Path, columns: Sequence[Column], *,
    required: Sequence[str | tuple[str, ...]] = (), sheet: str | None = None,
) -> Table:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise TableError(T_NOT_FOUND.format(path=path)) from None
    except OSError as exc:
        raise TableError(T_UNREADABLE.format(why=exc.strerror or type(exc).__name__)) from None
    return read_table(data, path.name, columns, required=required, sheet=sheet)


def read_table(
    data: bytes, filename: str, columns: Sequence[Column], *,
    required: Sequence[str | tuple[str, ...]] = (), sheet: str | None = None,
) -> Table:
    """Read a csv or xlsx file into rows keyed by field; blank rows are skipped.

    `required` names fields whose column must be present; a tuple means one of them.
    Raises TableError when the file cannot be read as a table.
    """
    lookup = {clean_header(alias): col.field for col in columns for alias in col.aliases}
    lookup.update({clean_header(col.field): col.field for col in columns})
    grid = read_grid(data, filename, sheet=sheet, header_names=lookup)
    header_at = _find_header(grid, lookup)
    number, header = grid[header_at]
    positions: dict[str, int] = {}
    ignored: list[str] = []
    for index, title in enumerate(header):
        if title is None or clean_text(title) == "":
            continue
        known = lookup.get(clean_header(title))
        if known is None:
            ignored.append(clean_text(title))
        elif known not in positions:
            positions[known] = index
    missing = [
        "/".join(need) if isinstance(need, tuple) else need
        for need in required
        if not any(n in positions for n in (need if isinstance(need, tuple) else (need,)))
    ]
    if missing:
        raise TableError(T_MISSING.format(names="、".join(missing)))
    rows = []
    for row_number, cells in grid[header_at + 1:]:
        values = {
            name: cells[index] if index < len(cells) else None
            for name, index in positions.items()
        }
        if all(v is None for v in values.values()):
            continue  # a blank row (or one with only unknown columns filled) is not a row
        rows.append(TableRow(row_number, values))
    return Table(number, list(positions), rows, ignored)


def _find_header(grid: list[tuple[int, list[CellValue]]], lookup: Mapping[str, str]) -> int:
    if not grid:
        raise TableError(T_UNREADABLE.format(why=T_EMPTY_FILE))
    for index, (_number, cells) in enumerate(grid[:HEADER_SEARCH_ROWS]):
        if any(c is not None and clean_header(c) in lookup for c in cells):
            return index
    raise TableError(T_UNREADABLE.format(why=T_NO_HEADER.format(n=HEADER_SEARCH_ROWS)))


def read_grid(
    data: bytes, filename: str, *, sheet: str | None = None,
    header_names: Collection[str] = (),
) -> list[tuple[int, list[CellValue]]]:
    """Every non-blank row with its spreadsheet row number, cells as the file holds them.

    Without `sheet`, a workbook is read from its first sheet whose top rows hold one of
    `header_names` (cleaned headers), or from its first sheet.
    """
    ext = Path(filename).suffix.lower()
    if ext == ".xls":
        raise TableError(T_UNREADABLE.format(why=T_XLS))
    if data.startswith(_CFB_MAGIC):
        raise TableError(T_UNREADABLE.format(why=T_ENCRYPTED))
    if ext in XLSX_EXTENSIONS:
        return _xlsx_grid(data, sheet, header_names)
    if ext in CSV_EXTENSIONS:
        return _csv_grid(data)
    raise TableError(T_UNREADABLE.format(why=T_UNKNOWN_FORMAT.format(ext=ext or filename)))


# --- csv ---------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """BOM first (UTF-8, UTF-16), then strict UTF-8, then GB18030 (a superset of GBK)."""
    if data.startswith(codecs.BOM_UTF8):
        candidates = [(data[len(codecs.BOM_UTF8):], "utf-8")]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = [(data, "utf-16")]
    else:
        candidates = [(data, "utf-8"), (data, "gb18030")]
    for raw, encoding in candidates:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise TableError(T_UNREADABLE.format(why=T_BAD_TEXT))


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


def _csv_grid(data: bytes) -> list[tuple[int, list[CellValue]]]:
    text = decode_text(data)
    if "\x00" in text:
        raise TableError(T_UNREADABLE.format(why=T_BAD_TEXT))
    try:
        records = _records(text, _sniff_delimiter(text))
    except csv.Error as exc:
        raise TableError(T_UNREADABLE.format(why=str(exc))) from None
    grid: list[tuple[int, list[CellValue]]] = []
    # Excel shows one record as one row, even when a quoted cell holds a line break.
    for number, record in enumerate(records, start=1):
        cells: list[CellValue] = [_csv_cell(c) for c in record]
        if any(c is not None for c in cells):
            grid.append((number, cells))
    return grid


def _csv_cell(text: str) -> str | None:
    text = text.strip(_TRIM)
    return text or None


# --- xlsx --------------------------------------------------------------------------


def _xlsx_grid(
    data: bytes, sheet: str | None, header_names: Collection[str] = ()
) -> list[tuple[int, list[CellValue]]]:
    from openpyxl import load_workbook

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise TableError(T_UNREADABLE.format(why=T_BAD_XLSX))
    # Read-only mode streams the sheet's XML: 50,000 rows of 15 cells in a few seconds and
    # without the whole sheet in memory (a full load took about 14 s and 150 MB).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles it drops
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # a broken archive raises many kinds; all mean "unreadable"
        why = f"{T_BAD_XLSX}（{type(exc).__name__}）"
        raise TableError(T_UNREADABLE.format(why=why)) from None
    try:
        sheets = [ws for ws in book.worksheets if hasattr(ws, "iter_rows")]
        if sheet is not None:
            if sheet not in book.sheetnames:
                names = "、".join(book.sheetnames)
                raise TableError(T_UNREADABLE.format(why=T_NO_SHEET.format(name=sheet,
                                                                            names=names)))
            worksheet = book[sheet]
        elif not sheets:
            raise TableError(T_UNREADABLE.format(why=T_EMPTY_FILE))
        else:
            worksheet = _sheet_with_header(sheets, header_names)
        return _worksheet_grid(book, worksheet)
    except TableError:
        raise
    except Exception as exc:  # a damaged sheet inside a sound archive
        why = f"{T_BAD_XLSX}（{type(exc).__name__}）"
        raise TableError(T_UNREADABLE.format(why=why)) from None
    finally:
        book.close()


def _sheet_with_header(sheets: list, header_names: Collection[str]):  # noqa: ANN001, ANN201
    """The first sheet whose top rows hold a known header; the first sheet otherwise."""
    if len(sheets) == 1 or not header_names:
        return sheets[0]
    for worksheet in sheets:
        worksheet.reset_dimensions()
        rows = worksheet.iter_rows(max_row=HEADER_SEARCH_ROWS, values_only=True)
        for values in rows:
            if any(v is not None and clean_header(v) in header_names for v in values):
                return worksheet
    return sheets[0]


_MERGE_REF = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Za-z]+\d+):([A-Za-z]+\d+)"')


def merged_ranges(book, worksheet) -> list[tuple[int, int, int, int]]:  # noqa: ANN001
    """(min_row, min_col, max_row, max_col) of every merged range of a read-only sheet.

    Read-only mode does not parse <mergeCells>, which follows the rows in the sheet's XML;
    scanning the part's bytes for them costs milliseconds.
    """
    from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

    # The part's path inside the archive: openpyxl keeps it on the read-only sheet.
    found: list[tuple[int, int, int, int]] = []
    tail = b""
    with book._archive.open(worksheet._worksheet_path) as part:
        while chunk := part.read(1 << 20):
            text = tail + chunk
            for match in _MERGE_REF.finditer(text):
                (c1, r1), (c2, r2) = (coordinate_from_string(m.decode())
                                      for m in match.groups())
                found.append((r1, column_index_from_string(c1), r2,
                              column_index_from_string(c2)))
            cut = text.rfind(b"<")
            tail = text[cut:] if cut >= 0 and b">" not in text[cut:] else b""
    return found


def _worksheet_grid(book, worksheet) -> list[tuple[int, list[CellValue]]]:  # noqa: ANN001
    # A merged range shows its top-left value in every cell: fill exactly those cells.
    cover: dict[tuple[int, int], int] = {}
    ranges = merged_ranges(book, worksheet)
    for index, (r1, c1, r2, c2) in enumerate(ranges):
        for row in range(r1, r2 + 1):
            for col in range(c1, c2 + 1):
                cover[(row, col)] = index
    widest = max((c2 for _r1, _c1, _r2, c2 in ranges), default=0)
    top_left: dict[int, object] = {}
    worksheet.reset_dimensions()  # the stored dimension may be wrong: read every row
    grid: list[tuple[int, list[CellValue]]] = []
    for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
        if cover:
            values = list(values) + [None] * (widest - len(values))
            for col in range(1, len(values) + 1):
                index = cover.get((number, col))
                if index is None:
                    continue
                r1, c1 = ranges[index][0], ranges[index][1]
                if (number, col) == (r1, c1):
                    top_left[index] = values[col - 1]
                else:
                    values[col - 1] = top_left.get(index)
        cells = [xlsx_cell(value) for value in values]
        if any(c is not None for c in cells):
            grid.append((number, cells))
    return grid


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


_DIGITS = re.compile(r"\d+")
# Written out in digits: "1e2" in a text cell is no whole number anyone typed on purpose.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def whole_number(value: CellValue, *, limit: int = 1_000_000) -> int | None:
    """A whole number ≥ 0, or None for an empty cell; anything else raises CellError.

    "-", "—", a negative number, a fraction or words are refused, never guessed.
    """
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, datetime | date | time):
        raise CellError(T_WHOLE)
    if isinstance(value, int | float):
        return _checked(value, limit)
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if not text:
        return None
    if text.casefold() in PLACEHOLDERS:
        raise CellError(T_PLACEHOLDER.format(text=text))
    if _DIGITS.fullmatch(text):
        return _checked(int(text), limit)
    if _NUMBER.fullmatch(text):
        return _checked(float(text), limit)
    raise CellError(T_WHOLE)


def _checked(number: int | float, limit: int) -> int:
    if number < 0:
        raise CellError(T_NEGATIVE)
    if isinstance(number, float) and not number.is_integer():
        raise CellError(T_FRACTION)
    if number > limit:
        raise CellError(T_TOO_LARGE.format(limit=limit))
    return int(number)
