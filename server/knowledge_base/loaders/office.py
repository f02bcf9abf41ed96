"""Office documents: .docx (python-docx) and .pptx (python-pptx), with OCR of their pictures.

Text from pictures goes into its own Documents marked `ocr: True`, placed where the picture sits,
so the order of the document survives.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from langchain_core.documents import Document
from lxml import etree

from server.knowledge_base.loaders.base import LoadContext, LoaderError, join_nonempty
from server.knowledge_base.loaders.limits import check_zip_package
from server.knowledge_base.loaders.ocr import try_ocr_image

_NS = {
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "v": "urn:schemas-microsoft-com:vml",
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
}
# Pictures in DrawingML (a:blip) and in legacy VML (v:imagedata), by relationship id.
_PICTURE_REL_IDS = etree.XPath(".//a:blip/@r:embed | .//v:imagedata/@r:id", namespaces=_NS)
_PARAGRAPHS = etree.XPath(".//w:p", namespaces=_NS)
_W = "{" + _NS["w"] + "}"  # lxml's {namespace}tag notation


# ---- .docx ----------------------------------------------------------------------------------


def load_docx(path: Path, ctx: LoadContext) -> list[Document]:
    document = _open_docx(path)
    docs: list[Document] = []
    pending: list[str] = []  # text blocks since the last picture
    for element in document.element.body.iterchildren():
        pending.append(_docx_block_text(element, document))
        pictures = _docx_picture_texts(element, document, ctx) if ctx.ocr else []
        if pictures:
            _flush(pending, docs, ctx)
            docs += [ctx.ocr_document(text) for text in pictures]
    _flush(pending, docs, ctx)
    return docs


def _open_docx(path: Path):
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    check_zip_package(path, ".docx")
    try:
        return docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LoaderError(f"not a valid .docx file (damaged, or not a Word 2007+ document): {exc}")


def _flush(pending: list[str], docs: list[Document], ctx: LoadContext) -> None:
    text = join_nonempty(pending)
    if text:
        docs.append(ctx.document(text))
    pending.clear()


def _docx_block_text(element, document) -> str:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    if element.tag == _W + "p":
        return Paragraph(element, document).text
    if element.tag == _W + "tbl":
        return _docx_table_text(Table(element, document))
    # Content controls and other wrappers: the paragraphs inside them.
    return join_nonempty(Paragraph(p, document).text for p in _PARAGRAPHS(element))


def _docx_table_text(table) -> str:
    rows = []
    for row in table.rows:
        seen, cells = set(), []
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue  # a merged cell is reported once per grid column it spans
            seen.add(id(cell._tc))
            cells.append(cell.text.strip())
        rows.append(" | ".join(cells))
    return join_nonempty(rows)


def _docx_picture_texts(element, document, ctx: LoadContext) -> list[str]:
    related = document.part.related_parts
    texts = []
    for rel_id in _PICTURE_REL_IDS(element):
        part = related.get(rel_id)
        if part is not None:
            texts.append(try_ocr_image(part.blob, ctx))
    return [t for t in texts if t.strip()]


# ---- .pptx ----------------------------------------------------------------------------------


def load_pptx(path: Path, ctx: LoadContext) -> list[Document]:
    presentation = _open_pptx(path)
    docs = []
    for slide_number, slide in enumerate(presentation.slides, start=1):
        texts, pictures = [], []
        for shape in _shapes_in_reading_order(slide.shapes):
            texts.append(_shape_text(shape))
            if ctx.ocr and _is_picture(shape):
                pictures.append(_picture_text(shape, ctx))
        texts.append(_notes_text(slide))
        text, ocr_text = join_nonempty(texts), join_nonempty(pictures)
        if text:
            docs.append(ctx.document(text, page=slide_number))
        if ocr_text:
            docs.append(ctx.ocr_document(ocr_text, page=slide_number))
    return docs


def _open_pptx(path: Path):
    import pptx
    from pptx.exc import PackageNotFoundError

    check_zip_package(path, ".pptx")
    try:
        return pptx.Presentation(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LoaderError(f"not a valid .pptx file (damaged, or not a PowerPoint 2007+ presentation): {exc}")


def _shapes_in_reading_order(shapes) -> Iterator:
    """Shapes top to bottom, then left to right, with groups opened up."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shapes_in_reading_order(shape.shapes)
        else:
            yield shape


def _shape_text(shape) -> str:
    if shape.has_text_frame:
        return shape.text_frame.text
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = (" | ".join(cell.text.strip() for cell in row.cells) for row in shape.table.rows)
        return join_nonempty(rows)
    return ""


def _is_picture(shape) -> bool:
    from pptx.shapes.picture import Picture

    return isinstance(shape, Picture)


def _picture_text(shape, ctx: LoadContext) -> str:
    try:
        blob = shape.image.blob
    except (ValueError, KeyError):
        return ""  # a linked (not embedded) picture has no bytes in the file
    return try_ocr_image(blob, ctx)


def _notes_text(slide) -> str:
    if not slide.has_notes_slide:
        return ""
    notes = slide.notes_slide.notes_text_frame
    return notes.text if notes is not None else ""
