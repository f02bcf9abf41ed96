"""Every supported format loads real files into text with the right metadata; broken files fail alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.knowledge_base.loaders import SUPPORTED_EXTS, LoaderError, is_table_file, load_file, loader_name_for
from tests.fixtures import documents as fx

ISSUE_EXTS = (
    ".txt .md .csv .json .jsonl .pdf .docx .pptx .xlsx .xls .html .htm .epub .eml .rst .xml .jpg .jpeg .png .bmp"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("documents")


@pytest.fixture(scope="module")
def pdf_docs(folder):
    return load_file(fx.make_pdf(folder))


def texts(docs) -> str:
    return "\n".join(doc.page_content for doc in docs)


def test_every_extension_chatchat_loads_is_supported():
    assert set(ISSUE_EXTS.split()) <= SUPPORTED_EXTS


def test_pdf_text_layer_keeps_page_numbers(pdf_docs):
    first = [d for d in pdf_docs if fx.PDF_TEXT_LAYER_PHRASE in d.page_content]
    assert first and first[0].metadata["page"] == 1
    assert not first[0].metadata.get("ocr")


def test_scanned_pdf_page_is_read_by_ocr_and_marked(pdf_docs):
    scanned = [d for d in pdf_docs if fx.PDF_SCAN_PHRASE in d.page_content]
    assert scanned, texts(pdf_docs)
    assert scanned[0].metadata["page"] == 2 and scanned[0].metadata["ocr"] is True


def test_large_pdf_figure_is_ocred_but_tiny_image_is_not(pdf_docs):
    all_text = texts(pdf_docs)
    assert fx.PDF_FIGURE_PHRASE in all_text
    assert fx.PDF_SMALL_IMAGE_PHRASE not in all_text  # below PDF_OCR_THRESHOLD


def test_pdf_without_ocr_has_only_the_text_layer(folder):
    docs = load_file(fx.make_pdf(folder), ocr=False)
    assert fx.PDF_TEXT_LAYER_PHRASE in texts(docs)
    assert fx.PDF_SCAN_PHRASE not in texts(docs)


def test_docx_text_table_and_picture(folder):
    docs = load_file(fx.make_docx(folder))
    all_text = texts(docs)
    assert "Visitors sign in at the front desk" in all_text
    assert "Early | 6 to 14" in all_text
    ocr = [d for d in docs if fx.DOCX_PICTURE_PHRASE in d.page_content]
    assert ocr and ocr[0].metadata["ocr"] is True


def test_pptx_slides_and_picture(folder):
    docs = load_file(fx.make_pptx(folder))
    assert docs[0].page_content == "Annual results overview" and docs[0].metadata["page"] == 1
    ocr = [d for d in docs if fx.PPTX_PICTURE_PHRASE in d.page_content]
    assert ocr and ocr[0].metadata == {**ocr[0].metadata, "page": 2, "ocr": True}


def test_image_is_read_by_ocr(folder):
    docs = load_file(fx.make_png(folder))
    assert fx.PNG_PHRASE in texts(docs)
    assert docs[0].metadata["ocr"] is True


@pytest.mark.parametrize("maker", [fx.make_xlsx, fx.make_xls], ids=["xlsx", "xls"])
def test_spreadsheets_become_one_document_per_row_with_column_names(folder, maker):
    path = maker(folder)
    docs = load_file(path)
    assert is_table_file(path)
    first = docs[0]
    assert first.metadata["row"] == 1 and "sheet" in first.metadata
    assert all(": " in line for line in first.page_content.splitlines())
    sheets = {d.metadata["sheet"] for d in docs}
    assert len(sheets) == 2  # every sheet is read


def test_xlsx_skips_empty_rows_and_formats_dates(folder):
    docs = load_file(fx.make_xlsx(folder))
    staff = [d for d in docs if d.metadata["sheet"] == "Staff"]
    assert [d.page_content for d in staff] == [
        "name: Alice\nteam: Search\njoined: 2021-03-01",
        "name: Bob\nteam: Ingest\njoined: 2022-07-15",
    ]


def test_gbk_csv_rows_with_headers(folder):
    docs = load_file(fx.make_csv_gbk(folder))
    assert [d.page_content for d in docs] == [
        "问题: 如何创建知识库？\n答案: 在网页界面点击新建",
        "问题: 默认端口？\n答案: 7861",
    ]
    assert [d.metadata["row"] for d in docs] == [1, 2]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("gbk", fx.CHINESE_TEXT),
        ("utf16", "UTF-16 text: naïve café, 中文。"),
        ("utf8_bom", "BOM text: Grüße, 你好"),
    ],
)
def test_text_in_any_common_encoding(folder, key, expected):
    path = fx.make_text_files(folder)[key]
    assert texts(load_file(path)) == expected


def test_markdown_keeps_headers_for_the_header_splitter(folder):
    text = texts(load_file(fx.make_text_files(folder)["md"]))
    assert text.startswith("# Guide") and "## Install" in text


def test_xml_drops_comments(folder):
    assert texts(load_file(fx.make_text_files(folder)["xml"])) == "Dune"


def test_json_and_jsonl(folder):
    json_path, jsonl_path = fx.make_json_files(folder)
    assert "示例" in texts(load_file(json_path))
    rows = load_file(jsonl_path)
    assert len(rows) == 2 and "What is chatkb?" in rows[0].page_content  # blank lines skipped


def test_html_drops_scripts_and_styles(folder):
    text = texts(load_file(fx.make_html(folder)))
    assert "All systems normal" in text and "7861" in text
    assert "SECRET_SCRIPT" not in text and "color:red" not in text


def test_eml_has_headers_and_body(folder):
    text = texts(load_file(fx.make_eml(folder)))
    assert "Subject: Quarterly numbers" in text and "the quarterly numbers are attached" in text


def test_epub_follows_the_spine(folder):
    docs = load_file(fx.make_epub(folder))
    assert "The storm arrives." in docs[0].page_content
    assert "The lighthouse keeper." in texts(docs)


def test_loader_names_are_recorded_per_extension():
    assert loader_name_for("a.pdf") != loader_name_for("a.docx")
    assert loader_name_for("A.PDF") == loader_name_for("a.pdf")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("truncated_pdf", "truncated or damaged"),
        ("binary_txt", "binary content"),
        ("empty", "empty"),
        ("unknown_ext", "unsupported file type"),
        ("corrupt_docx", "not a valid .docx"),
    ],
)
def test_broken_files_raise_a_loader_error_that_says_why(folder, key, message):
    broken = fx.make_broken_files(folder, fx.make_pdf(folder))
    with pytest.raises(LoaderError, match=message):
        load_file(broken[key])


def test_openvino_and_onnxruntime_ocr_read_the_same_text(folder):
    from server.knowledge_base.loaders.ocr import _create_engine, arrange_lines, to_rgb_image

    image = to_rgb_image(fx.text_image([fx.PNG_PHRASE, "Invoice 4711 due March 15"]))
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    readings = {}
    for backend in ("onnxruntime", "openvino"):
        engine = _create_engine(backend)
        assert type(engine).__module__.startswith(f"rapidocr_{backend}")
        result, _ = engine(bgr)
        readings[backend] = arrange_lines([(box, text) for box, text, _ in result])
    assert readings["openvino"] == readings["onnxruntime"]
    assert fx.PNG_PHRASE.split()[-1] in readings["openvino"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_detection_size_setting_reaches_the_engine_and_text_is_still_read(backend, monkeypatch):
    from configs import reload_settings
    from server.knowledge_base.loaders.ocr import _create_engine, arrange_lines, to_rgb_image

    monkeypatch.setenv("CHATCHAT_OCR_DET_LIMIT_TYPE", "max")
    monkeypatch.setenv("CHATCHAT_OCR_DET_LIMIT_SIDE_LEN", "960")
    reload_settings()
    try:
        engine = _create_engine(backend)
    finally:
        monkeypatch.delenv("CHATCHAT_OCR_DET_LIMIT_TYPE")
        monkeypatch.delenv("CHATCHAT_OCR_DET_LIMIT_SIDE_LEN")
        reload_settings()
    assert (engine.text_det.limit_type, engine.text_det.limit_side_len) == ("max", 960)
    image = to_rgb_image(fx.text_image([fx.PNG_PHRASE]))
    result, _ = engine(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]))
    assert fx.PNG_PHRASE.split()[-1] in arrange_lines([(box, text) for box, text, _ in result])
    default = _create_engine(backend).text_det  # RapidOCR's own default once the setting is gone
    assert (default.limit_type, default.limit_side_len) == ("min", 736)
