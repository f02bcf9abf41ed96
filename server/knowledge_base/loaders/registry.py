"""Which loader reads which file extension, under the loader names Chatchat 0.2.x stored in its DB."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders import images, markup, office, pdf, tables, text
from server.knowledge_base.loaders.base import LoadContext


@dataclass(frozen=True)
class LoaderSpec:
    name: str
    load: Callable[[Path, LoadContext], list[Document]]
    is_table: bool = False  # one Document per row; the splitter keeps each row whole


_PLAIN = text.load_plain_text
LOADERS: dict[str, LoaderSpec] = {
    ".txt": LoaderSpec("TextLoader", _PLAIN),
    ".md": LoaderSpec("UnstructuredMarkdownLoader", _PLAIN),
    ".rst": LoaderSpec("UnstructuredRSTLoader", _PLAIN),
    ".py": LoaderSpec("PythonLoader", _PLAIN),
    ".toml": LoaderSpec("TomlLoader", _PLAIN),
    ".srt": LoaderSpec("SRTLoader", text.load_subtitles),
    ".json": LoaderSpec("JSONLoader", text.load_json),
    ".jsonl": LoaderSpec("JSONLinesLoader", text.load_json_lines),
    ".xml": LoaderSpec("UnstructuredXMLLoader", text.load_xml),
    ".csv": LoaderSpec("CSVLoader", tables.load_csv, is_table=True),
    ".tsv": LoaderSpec("TSVLoader", tables.load_csv, is_table=True),
    ".xlsx": LoaderSpec("ExcelLoader", tables.load_excel, is_table=True),
    ".xls": LoaderSpec("ExcelLoader", tables.load_excel, is_table=True),
    ".pdf": LoaderSpec("RapidOCRPDFLoader", pdf.load_pdf),
    ".docx": LoaderSpec("RapidOCRDocLoader", office.load_docx),
    ".pptx": LoaderSpec("RapidOCRPPTLoader", office.load_pptx),
    ".html": LoaderSpec("UnstructuredHTMLLoader", markup.load_html),
    ".htm": LoaderSpec("UnstructuredHTMLLoader", markup.load_html),
    ".mhtml": LoaderSpec("MHTMLLoader", markup.load_mhtml),
    ".eml": LoaderSpec("EmailLoader", markup.load_email),
    ".epub": LoaderSpec("EPubLoader", markup.load_epub),
    ".png": LoaderSpec("RapidOCRLoader", images.load_image),
    ".jpg": LoaderSpec("RapidOCRLoader", images.load_image),
    ".jpeg": LoaderSpec("RapidOCRLoader", images.load_image),
    ".bmp": LoaderSpec("RapidOCRLoader", images.load_image),
}
