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
T_TOO_MANY_ROWS = "文件超过 {limit} 行（第 {row} 行仍有内容），请拆分成几个文件分别导入"
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
# The most rows a file may have below its header. A sheet can claim a million rows in a
# few megabytes (one cell each); past this the file is refused before it costs memory.
MAX_ROWS = 100_000
# Cells read per row: a merged range or a stray cell in column XFD must not make every
# row 16,384 cells wide. No import knows anywhere near this many columns.
MAX_COLUMNS = 200
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
    max_rows: int = MAX_ROWS,
) -> Table:
    """Read a csv or xlsx file into rows keyed by field; blank rows are skipped.

    `required` names fields whose column must be present; a tuple means one of them. The
    header is found and checked before any row below it is read, and a file with more
    than `max_rows` rows below its header is refused as it is read.
    Raises TableError when the file cannot be read as a table.
    """
    lookup = {clean_header(alias): col.field for col in columns for alias in col.aliases}
    lookup.update({clean_header(col.field): col.field for col in columns})
    with closing(iter_grid(data, filename, sheet=sheet, header_names=lookup)) as grid:
        top: list[tuple[int, list[CellValue]]] = []
        for entry in grid:
            top.append(entry)
            if _is_header(entry[1], lookup) or len(top) >= HEADER_SEARCH_ROWS:
                break
        if not top:
            raise TableError(T_UNREADABLE.format(why=T_EMPTY_FILE))
        if not _is_header(top[-1][1], lookup):
            raise TableError(T_UNREADABLE.format(why=T_NO_HEADER.format(n=HEADER_SEARCH_ROWS)))
        number, header = top[-1]
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
        for row_number, cells in grid:
            if row_number - number > max_rows:
                raise TableError(T_TOO_MANY_ROWS.format(limit=f"{max_rows:,}",
                                                        row=row_number))
            values = {
                name: cells[index] if index < len(cells) else None
                for name, index in positions.items()
            }
            if all(v is None for v in values.values()):
                continue  # a blank row (or one with only unknown columns filled) is not a row
            rows.append(TableRow(row_number, values))
    return Table(number, list(positions), rows, ignored, repeated)


def _is_header(cells: list[CellValue], lookup: Mapping[str, str]) -> bool:
    return any(c is not None and clean_header(c) in lookup for c in cells)


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


Grid = Iterator[tuple[int, list[CellValue]]]


def read_grid(
    data: bytes, filename: str, *, sheet: str | None = None,
    header_names: Collection[str] = (),
) -> list[tuple[int, list[CellValue]]]:
    """Every non-blank row with its spreadsheet row number (all of iter_grid)."""
    with closing(iter_grid(data, filename, sheet=sheet, header_names=header_names)) as rows:
        return list(rows)


def iter_grid(
    data: bytes, filename: str, *, sheet: str | None = None,
    header_names: Collection[str] = (),
) -> Grid:
    """Every non-blank row with its spreadsheet row number, cells as the file holds them,
    read as it is needed.

    Without `sheet`, a workbook is read from its first sheet whose top rows hold one of
    `header_names` (cleaned headers) with rows below them, else the first with such a
    header, else its first sheet.
    """
    ext = Path(filename).suffix.lower()
    if ext == ".xls":
        raise TableError(T_UNREADABLE.format(why=T_XLS))
    if data.startswith(_CFB_MAGIC):
        raise TableError(T_UNREADABLE.format(why=T_ENCRYPTED))
    if ext in XLSX_EXTENSIONS:
        yield from _xlsx_grid(data, sheet, header_names)
    elif ext in CSV_EXTENSIONS:
        yield from _csv_grid(data)
    else:
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


def _csv_grid(data: bytes) -> Grid:
    text = decode_text(data)
    if "\x00" in text:
        raise TableError(T_UNREADABLE.format(why=T_BAD_TEXT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
    # Excel shows one record as one row, even when a quoted cell holds a line break.
    number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TableError(T_UNREADABLE.format(why=str(exc))) from None
        number += 1
        cells: list[CellValue] = [_csv_cell(c) for c in record[:MAX_COLUMNS]]
        if any(c is not None for c in cells):
            yield number, cells


def _csv_cell(text: str) -> str | None:
    text = text.strip(_TRIM)
    return text or None


# --- xlsx --------------------------------------------------------------------------


def _xlsx_grid(data: bytes, sheet: str | None, header_names: Collection[str] = ()) -> Grid:
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
        yield from _worksheet_grid(book, worksheet)
    except TableError:
        raise
    except Exception as exc:  # a damaged sheet inside a sound archive
        why = f"{T_BAD_XLSX}（{type(exc).__name__}）"
        raise TableError(T_UNREADABLE.format(why=why)) from None
    finally:
        book.close()


def _sheet_with_header(sheets: list, header_names: Collection[str]):  # noqa: ANN001, ANN201
    """The first sheet with a known header in its top rows and a row below it; else the
    first with the header alone (an empty template sheet); else the first sheet."""
    if len(sheets) == 1 or not header_names:
        return sheets[0]
    header_only = None
    for worksheet in sheets:
        worksheet.reset_dimensions()
        rows = worksheet.iter_rows(max_row=2 * HEADER_SEARCH_ROWS, values_only=True)
        seen_header = False
        for values in rows:
            filled = any(v is not None and str(v).strip(_TRIM) for v in values)
            if seen_header and filled:
                return worksheet
            if not seen_header and any(v is not None and clean_header(v) in header_names
                                       for v in values):
                seen_header = True
        if seen_header and header_only is None:
            header_only = worksheet
    return header_only if header_only is not None else sheets[0]


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


def _worksheet_grid(book, worksheet) -> Grid:  # noqa: ANN001
    """The sheet's rows, at most MAX_COLUMNS cells each, merged ranges filled.

    A merged range shows its top-left value in every cell: exactly those cells are filled.
    Ranges are followed row by row (sorted by their first row), so a range covering a
    million rows costs nothing until those rows are read.
    """
    ranges = sorted(
        (r1, c1, r2, min(c2, MAX_COLUMNS)) for r1, c1, r2, c2 in merged_ranges(book, worksheet)
        if c1 <= MAX_COLUMNS
    )
    pending = 0  # ranges[:pending] have begun
    active: list[tuple[int, int, int, int]] = []
    top_left: dict[tuple[int, int], object] = {}
    worksheet.reset_dimensions()  # the stored dimension may be wrong: read every row
    for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
        values = list(values[:MAX_COLUMNS])
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
                for col in range(c1, c2 + 1):
                    if (number, col) != (r1, c1):
                        values[col - 1] = top_left.get((r1, c1))
        cells = [xlsx_cell(value) for value in values]
        if any(c is not None for c in cells):
            yield number, cells


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
