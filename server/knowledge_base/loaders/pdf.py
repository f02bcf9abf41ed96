"""PDF (pypdfium2): the text layer per page, plus OCR where the text lives in pictures.

A page with (almost) no text layer is rendered and OCR'd whole (scans). On other pages only the
embedded images that cover at least `pdf_ocr_threshold` of the page width and height are OCR'd
(Chatchat's rule): large figures and screenshots carry text, logos and icons rarely do.
"""

from __future__ import annotations

import logging
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError

logger = logging.getLogger(__name__)

# Fewer visible characters than this in the text layer means a scanned or image-only page.
MIN_TEXT_LAYER_CHARS = 20
# Render scale for OCR: 2x of 72 dpi is ~144 dpi, enough for body text without huge bitmaps.
RENDER_SCALE = 2.0


def load_pdf(path: Path, ctx: LoadContext) -> list[Document]:
    pdf = _open_pdf(path)
    try:
        docs = []
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                docs += _page_documents(page, index + 1, ctx)
            finally:
                page.close()
        return docs
    finally:
        pdf.close()


def _open_pdf(path: Path):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise LoaderError(f"PDF is password-protected: {exc}")
        raise LoaderError(f"PDF is truncated or damaged: {exc}")


def _page_documents(page, page_number: int, ctx: LoadContext) -> list[Document]:
    text = _text_layer(page)
    docs = [ctx.document(text, page=page_number)] if text.strip() else []
    if not ctx.ocr:
        return docs
    if _visible_chars(text) < MIN_TEXT_LAYER_CHARS:
        ocr_text = _ocr_rendered_page(page)
    else:
        ocr_text = _ocr_large_images(page, ctx.pdf_ocr_threshold)
    if ocr_text.strip():
        docs.append(ctx.ocr_document(ocr_text, page=page_number))
    return docs


def _text_layer(page) -> str:
    textpage = page.get_textpage()
    try:
        return textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
    finally:
        textpage.close()


def _visible_chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


def _ocr_rendered_page(page) -> str:
    from server.knowledge_base.loaders.ocr import ocr_image

    bitmap = page.render(scale=RENDER_SCALE)
    try:
        return ocr_image(bitmap.to_pil())
    finally:
        bitmap.close()


def _ocr_large_images(page, threshold: tuple[float, float]) -> str:
    import pypdfium2.raw as pdfium_c

    from server.knowledge_base.loaders.ocr import ocr_image

    page_width, page_height = page.get_size()
    texts = []
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
        left, bottom, right, top = image.get_bounds()
        if (right - left) < threshold[0] * page_width or (top - bottom) < threshold[1] * page_height:
            continue
        try:
            texts.append(ocr_image(image.get_bitmap(render=True).to_pil()))
        except Exception as exc:  # one unreadable picture must not lose the page's other text
            logger.debug("skipping a PDF image that could not be decoded: %s", exc)
    return "\n".join(t for t in texts if t.strip())
