"""Table families (.csv .tsv .xlsx .xls): one Document per data row, "column: value" per line.

This is Chatchat's CSVLoader text format; the splitter keeps each row as one chunk.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError
from server.knowledge_base.loaders.limits import RowBudget, check_zip_package
from server.knowledge_base.loaders.text import read_text

# Long text cells (FAQ answers) exceed csv's 128 KiB default field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def format_cell(value: Any) -> str:
    """Cell value as a person would read it: 4711 not 4711.0, dates without a midnight time."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value).strip()


def rows_to_documents(rows: Iterable[Sequence[Any]], ctx: LoadContext, **metadata: Any) -> list[Document]:
    """The first non-empty row names the columns; every later non-empty row becomes one Document."""
    header: list[str] | None = None
    docs = []
    row_number = 0
    for raw_row in rows:
        cells = [format_cell(v) for v in raw_row]
        if not any(cells):
            continue
        if header is None:
            header = cells
            continue
        row_number += 1
        docs.append(ctx.document(_row_text(header, cells), row=row_number, **metadata))
    return docs


def _row_text(header: list[str], cells: list[str]) -> str:
    lines = []
    for index, value in enumerate(cells):
        if not value:
            continue  # an empty cell adds nothing a question could match
        name = header[index] if index < len(header) and header[index] else f"column{index + 1}"
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


# ---- CSV / TSV ------------------------------------------------------------------------------


def load_csv(path: Path, ctx: LoadContext) -> list[Document]:
    text = read_text(path, ctx)
    delimiter = "\t" if ctx.ext == ".tsv" else _guess_delimiter(text)
    rows = RowBudget(ctx.ext).rows(csv.reader(io.StringIO(text), delimiter=delimiter))
    try:
        return rows_to_documents(rows, ctx)
    except csv.Error as exc:
        raise LoaderError(f"malformed {ctx.ext} file: {exc}")


def _guess_delimiter(text: str) -> str:
    """Comma unless the header line has none but has semicolons, tabs or pipes (European Excel exports)."""
    first_line = text.lstrip().split("\n", 1)[0]
    if "," in first_line:
        return ","
    for candidate in (";", "\t", "|"):
        if candidate in first_line:
            return candidate
    return ","


# ---- Excel ----------------------------------------------------------------------------------


def load_excel(path: Path, ctx: LoadContext) -> list[Document]:
    """Every sheet of a workbook; the format is taken from the content, so a renamed .xls/.xlsx still loads."""
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith(_ZIP_MAGIC):
        return _load_xlsx(path, ctx)
    if magic == _OLE_MAGIC or ctx.ext == ".xls":
        return _load_xls(path, ctx)
    raise LoaderError(f"not a valid Excel workbook: a {ctx.ext} file must be a zip archive (damaged or renamed?)")


def _load_xlsx(path: Path, ctx: LoadContext) -> list[Document]:
    import openpyxl

    check_zip_package(path, ctx.ext)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise LoaderError(f"Excel workbook is damaged or not an .xlsx file: {exc}")
    budget = RowBudget(ctx.ext)
    try:
        docs = []
        for sheet in workbook.worksheets:
            # The declared size (<dimension ref="A1:XFD1048576"/>) would pad every row to 16384 cells.
            sheet.reset_dimensions()
            docs += rows_to_documents(budget.rows(sheet.iter_rows(values_only=True)), ctx, sheet=sheet.title)
        return docs
    finally:
        workbook.close()


def _load_xls(path: Path, ctx: LoadContext) -> list[Document]:
    import xlrd

    try:
        book = xlrd.open_workbook(str(path), on_demand=True)
    except xlrd.XLRDError as exc:
        raise LoaderError(f"Excel 97-2003 workbook is damaged or not an .xls file: {exc}")
    budget = RowBudget(ctx.ext)
    try:
        docs = []
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            docs += rows_to_documents(budget.rows(_xls_rows(sheet, book.datemode)), ctx, sheet=sheet.name)
        return docs
    finally:
        book.release_resources()


def _xls_rows(sheet, datemode: int) -> Iterator[list[Any]]:
    for row_index in range(sheet.nrows):
        yield [_xls_value(cell, datemode) for cell in sheet.row(row_index)]


def _xls_value(cell, datemode: int) -> Any:
    import xlrd

    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate_as_datetime(cell.value, datemode)
        except (xlrd.xldate.XLDateError, ValueError, OverflowError):
            return cell.value
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(cell.value)
    if cell.ctype in (xlrd.XL_CELL_ERROR, xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return None
    return cell.value
