"""Untrusted files are parsed under limits: huge pages, pictures, zip bombs and endless tables fail alone, naming
the limit and its setting, before a library allocates what they declare.

Every hostile file is made here, small on disk: each would take gigabytes or minutes without the limits.
"""

from __future__ import annotations

import io
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from server.knowledge_base.ingest import ChunkingOptions, ParseTask, parse_file, parse_files
from server.knowledge_base.loaders import LoaderError, load_file
from tests.fixtures import documents as fx

HUGE_PAGE_PT = 14400  # PDF's largest page side: 28800x28800 pixels at the OCR render scale


@pytest.fixture
def limits(monkeypatch):
    """Set limits through the environment (as an operator would) for one test."""
    from configs import reload_settings

    def set_limits(**values):
        for name, value in values.items():
            monkeypatch.setenv(f"CHATCHAT_{name}", str(value))
        reload_settings()

    yield set_limits
    names = ("OCR_MAX_PIXELS", "MAX_OFFICE_UNZIPPED_BYTES", "MAX_OFFICE_PARTS", "MAX_TABLE_ROWS", "MAX_TABLE_CELLS")
    for name in (*names, "PARSE_TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"CHATCHAT_{name}", raising=False)
    reload_settings()


def huge_page_pdf(path: Path) -> Path:
    """One 14400x14400 pt page with no text layer, a few hundred bytes (the issue's 333-byte PDF)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    pdf.new_page(HUGE_PAGE_PT, HUGE_PAGE_PT).close()
    pdf.save(path)
    pdf.close()
    return path


def huge_page_pdf_with_text(path: Path, text: str) -> Path:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(HUGE_PAGE_PT, HUGE_PAGE_PT))
    pdf.add_page()
    pdf.set_font("helvetica", size=24)
    pdf.cell(text=text)
    pdf.output(str(path))
    return path


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height black pixels: tens of KB on disk, width*height bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte 0, then the row's pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rezip(source: Path, target: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None):
    """A copy of a zip-based document with some members replaced or added, deflated."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            new.writestr(item.filename, replace.get(item.filename, old.read(item.filename)))
        for name, data in add.items():
            new.writestr(name, data)
    return target


# ---- pixel budget: PDF pages ----------------------------------------------------------------


def test_a_huge_pdf_page_without_text_fails_naming_the_pixel_limit_without_rendering(tmp_path):
    path = huge_page_pdf(tmp_path / "poster.pdf")
    assert path.stat().st_size < 1000
    started = time.perf_counter()
    with pytest.raises(LoaderError) as failure:
        load_file(path)
    assert time.perf_counter() - started < 10  # rendering 28800x28800 would take minutes and ~10 GB
    message = str(failure.value)
    assert "page 1" in message and "OCR_MAX_PIXELS" in message and "40000000" in message, message


def test_a_huge_pdf_page_keeps_its_text_layer(tmp_path):
    path = huge_page_pdf_with_text(tmp_path / "poster.pdf", "Giant poster text layer")
    docs = load_file(path)
    assert "Giant poster text layer" in docs[0].page_content


def test_a_pdf_page_over_the_budget_is_rendered_smaller_and_still_read(tmp_path, limits):
    from server.knowledge_base.loaders import pdf as pdf_loader

    # The scanned page is A4 (595x842 pt): 2 M pixels at scale 2; a 1.2 M budget renders it at ~1.55.
    limits(OCR_MAX_PIXELS=1_200_000)
    rendered = []
    real_render = pdf_loader._render_scale

    def spy(page, page_number, ctx):
        scale = real_render(page, page_number, ctx)
        rendered.append((scale, page.get_size()))
        return scale

    pdf_loader._render_scale = spy
    try:
        docs = load_file(fx.make_pdf(tmp_path))
    finally:
        pdf_loader._render_scale = real_render
    assert fx.PDF_SCAN_PHRASE in "\n".join(d.page_content for d in docs)
    assert rendered
    for scale, (width, height) in rendered:
        assert pdf_loader.MIN_RENDER_SCALE <= scale < pdf_loader.RENDER_SCALE
        assert width * height * scale * scale <= 1_200_000


# ---- pixel budget: images and embedded pictures ---------------------------------------------


def test_an_image_declaring_81_million_pixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_bomb(9000, 9000))
    assert path.stat().st_size < 200_000
    started = time.perf_counter()
    with pytest.raises(LoaderError) as failure:
        load_file(path)
    assert time.perf_counter() - started < 5
    assert "9000x9000" in str(failure.value) and "OCR_MAX_PIXELS" in str(failure.value)


def test_the_image_limit_follows_the_setting(tmp_path, limits):
    limits(OCR_MAX_PIXELS=10_000)
    with pytest.raises(LoaderError, match="OCR_MAX_PIXELS"):
        load_file(fx.make_png(tmp_path))


def test_a_huge_picture_in_a_docx_is_skipped_and_the_text_kept(tmp_path):
    import docx

    document = docx.Document()
    document.add_paragraph("The gate opens at seven.")
    document.add_picture(io.BytesIO(png_header_bomb(9000, 9000)))
    path = tmp_path / "picture.docx"
    document.save(path)
    started = time.perf_counter()
    docs = load_file(path)
    assert time.perf_counter() - started < 10
    assert [d.page_content for d in docs] == ["The gate opens at seven."]


def test_a_docx_whose_only_content_is_a_huge_picture_says_why_nothing_was_read(tmp_path):
    import docx

    document = docx.Document()
    document.add_picture(io.BytesIO(png_header_bomb(9000, 9000)))
    path = tmp_path / "picture.docx"
    document.save(path)
    with pytest.raises(LoaderError, match="no text could be extracted.*OCR_MAX_PIXELS"):
        load_file(path)


# ---- office files: unpacked size, ratio, parts ----------------------------------------------


def test_a_docx_zip_bomb_is_refused_before_parsing(tmp_path):
    source = fx.make_docx(tmp_path)
    with zipfile.ZipFile(source) as archive:
        xml = archive.read("word/document.xml")
    padded = xml.replace(b"</w:body>", b" " * (30 * 1024 * 1024) + b"</w:body>")  # 30 MB of blanks, ~30 KB packed
    bomb = rezip(source, tmp_path / "bomb.docx", replace={"word/document.xml": padded})
    assert bomb.stat().st_size < 200_000
    with pytest.raises(LoaderError) as failure:
        load_file(bomb)
    assert "word/document.xml" in str(failure.value) and "MAX_OFFICE_COMPRESSION_RATIO" in str(failure.value)


@pytest.mark.parametrize("maker", [fx.make_docx, fx.make_pptx, fx.make_xlsx, fx.make_epub])
def test_zip_documents_over_the_unpacked_size_limit_fail_naming_it(tmp_path, limits, maker):
    path = maker(tmp_path)
    limits(MAX_OFFICE_UNZIPPED_BYTES=1000)
    with pytest.raises(LoaderError, match=r"unpacks to \d+ bytes, over the limit of 1000 bytes \(MAX_OFFICE_UNZIPPED"):
        load_file(path)


def test_a_docx_with_too_many_parts_fails_naming_the_limit(tmp_path, limits):
    source = fx.make_docx(tmp_path)
    many = rezip(source, tmp_path / "many.docx", add={f"extra/item{i}.xml": b"<a/>" for i in range(50)})
    limits(MAX_OFFICE_PARTS=40)
    with pytest.raises(LoaderError, match=r"parts, over the limit of 40 \(MAX_OFFICE_PARTS\)"):
        load_file(many)


def test_an_ordinary_docx_is_within_the_default_limits(tmp_path):
    assert load_file(fx.make_docx(tmp_path))


# ---- tables: rows ---------------------------------------------------------------------------


def test_an_xlsx_over_the_row_limit_fails_naming_it(tmp_path, limits):
    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("data")
    sheet.append(["id", "name"])
    for index in range(1500):
        sheet.append([index, f"row {index}"])
    path = tmp_path / "rows.xlsx"
    workbook.save(path)
    limits(MAX_TABLE_ROWS=1000)
    with pytest.raises(LoaderError, match=r"more than 1000 rows \(MAX_TABLE_ROWS\)"):
        load_file(path)


def test_the_row_limit_counts_every_sheet_of_a_workbook(tmp_path, limits):
    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    for name in ("one", "two"):
        sheet = workbook.create_sheet(name)
        for index in range(600):
            sheet.append([f"value {index}"])
    path = tmp_path / "sheets.xlsx"
    workbook.save(path)
    limits(MAX_TABLE_ROWS=1000)
    with pytest.raises(LoaderError, match="MAX_TABLE_ROWS"):
        load_file(path)


def test_an_xlsx_of_two_million_rows_in_160_kb_is_refused_before_reading_them(tmp_path):
    # The file: identical rows without row numbers pack ~400:1; openpyxl walks them for minutes.
    source = fx.make_xlsx(tmp_path)
    with zipfile.ZipFile(source) as archive:
        xml = re.sub(rb'<dimension ref="[^"]*"/>', b"", archive.read("xl/worksheets/sheet1.xml"))
    rows = b'<row><c t="n"><v>1</v></c></row>' * 2_000_000
    sheet = xml.replace(b"</sheetData>", rows + b"</sheetData>")
    bomb = rezip(source, tmp_path / "rows.xlsx", replace={"xl/worksheets/sheet1.xml": sheet})
    assert bomb.stat().st_size < 300_000
    started = time.perf_counter()
    with pytest.raises(LoaderError, match=r"xl/worksheets/sheet1.xml unpacks \d+ times.*MAX_OFFICE_COMPRESSION_RATIO"):
        load_file(bomb)
    assert time.perf_counter() - started < 5


def xlsx_with_sheet_xml(tmp_path, dimension: bytes, rows: bytes) -> Path:
    source = fx.make_xlsx(tmp_path)
    with zipfile.ZipFile(source) as archive:
        xml = re.sub(
            rb'<dimension ref="[^"]*"/>',
            b'<dimension ref="' + dimension + b'"/>',
            archive.read("xl/worksheets/sheet1.xml"),
        )
    sheet = xml.replace(b"</sheetData>", rows + b"</sheetData>")
    return rezip(source, tmp_path / "sheet.xlsx", replace={"xl/worksheets/sheet1.xml": sheet})


def test_a_declared_sheet_size_does_not_pad_every_row(tmp_path):
    # Declaring A1:XFD1048576 made openpyxl pad each of 20000 rows to 16384 cells: 330 M cells for a 100 KB file
    # (16 s; minutes at the row limit). Padded, they would also be over MAX_TABLE_CELLS.
    rows = b"".join(
        b'<row r="%d"><c r="A%d" t="inlineStr"><is><t>v%d</t></is></c></row>' % (i, i, i) for i in range(5, 20005)
    )
    path = xlsx_with_sheet_xml(tmp_path, b"A1:XFD1048576", rows)
    started = time.perf_counter()
    docs = load_file(path)
    assert time.perf_counter() - started < 8
    assert any(doc.page_content == "name: v20004" for doc in docs)


def test_rows_made_wide_by_a_far_cell_fail_naming_the_cell_limit(tmp_path, limits):
    rows = b"".join(b'<row r="%d"><c r="XFD%d"><v>1</v></c></row>' % (i, i) for i in range(5, 105))
    path = xlsx_with_sheet_xml(tmp_path, b"A1:XFD104", rows)
    limits(MAX_TABLE_CELLS=100_000)
    with pytest.raises(LoaderError, match=r"more than 100000 cells \(MAX_TABLE_CELLS\)"):
        load_file(path)


def test_a_csv_over_the_row_limit_fails_naming_it(tmp_path, limits):
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(f"{i},row {i}\n" for i in range(1500)))
    limits(MAX_TABLE_ROWS=1000)
    with pytest.raises(LoaderError, match=r"more than 1000 rows \(MAX_TABLE_ROWS\)"):
        load_file(path)


def test_a_table_within_the_row_limit_loads(tmp_path, limits):
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(f"{i},row {i}\n" for i in range(99)))
    limits(MAX_TABLE_ROWS=100)
    assert len(load_file(path)) == 99


# ---- the ingestion pipeline -----------------------------------------------------------------


def test_parse_file_reports_the_limit_as_the_files_error(tmp_path):
    path = huge_page_pdf(tmp_path / "poster.pdf")
    options = ChunkingOptions(chunk_size=250, chunk_overlap=50)
    result = parse_file(ParseTask("posters/poster.pdf", str(path), options))
    assert result.error and "OCR_MAX_PIXELS" in result.error and not result.chunks
    assert str(tmp_path) not in result.error


# ---- wall-clock limit per file (PARSE_TIMEOUT_SECONDS) --------------------------------------


def test_supervised_parsing_gives_what_in_process_parsing_gives(tmp_path):
    options = ChunkingOptions(chunk_size=250, chunk_overlap=50)
    (tmp_path / "a.txt").write_text("The ferry leaves at noon.")
    tasks = [
        ParseTask("a.txt", str(tmp_path / "a.txt"), options),
        ParseTask("b.docx", str(fx.make_docx(tmp_path)), options),
    ]
    in_process = {p.file_name: (p.chunks, p.error) for p in parse_files(tasks, workers=1, timeout=0)}
    supervised = {p.file_name: (p.chunks, p.error) for p in parse_files(tasks, workers=1, timeout=120)}
    assert supervised == in_process and not any(error for _, error in supervised.values())


def test_a_file_over_the_time_limit_fails_alone_and_the_next_file_is_parsed(tmp_path, limits):
    # Past the row and cell limits, so the clock must stop it; the timeout comes from the setting.
    limits(MAX_TABLE_ROWS=10_000_000, MAX_TABLE_CELLS=100_000_000, PARSE_TIMEOUT_SECONDS=1)
    slow = tmp_path / "slow.csv"
    slow.write_text("id,name,notes\n" + "".join(f"{i},row {i},some notes\n" for i in range(1_500_000)))
    good = tmp_path / "good.txt"
    good.write_text("The lighthouse keeper feeds the cats.")
    options = ChunkingOptions(chunk_size=250, chunk_overlap=50)
    tasks = [ParseTask("slow.csv", str(slow), options), ParseTask("good.txt", str(good), options)]
    started = time.perf_counter()
    results = {p.file_name: p for p in parse_files(tasks, workers=1)}
    assert time.perf_counter() - started < 30
    assert "PARSE_TIMEOUT_SECONDS" in results["slow.csv"].error and not results["slow.csv"].chunks
    assert results["good.txt"].error is None and results["good.txt"].chunks


def test_stopping_early_kills_the_parser_children(tmp_path):
    options = ChunkingOptions(chunk_size=250, chunk_overlap=50)
    tasks = []
    for index in range(3):
        (tmp_path / f"{index}.txt").write_text(f"File number {index}.")
        tasks.append(ParseTask(f"{index}.txt", str(tmp_path / f"{index}.txt"), options))
    import multiprocessing

    results = parse_files(tasks, workers=2, timeout=120)
    assert next(results).error is None
    results.close()
    assert not multiprocessing.active_children()
