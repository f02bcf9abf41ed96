"""PDF (pypdfium2): the text layer per page, plus OCR where the text lives in pictures.

A page with (almost) no text layer is rendered and OCR'd whole (scans). On other pages only the
embedded images that cover at least `pdf_ocr_threshold` of the page width and height are OCR'd
(Chatchat's rule): large figures and screenshots carry text, logos and icons rarely do.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError
from server.knowledge_base.loaders.limits import LimitExceeded, check_pixels, ocr_max_pixels

logger = logging.getLogger(__name__)

# Fewer visible characters than this in the text layer means a scanned or image-only page.
MIN_TEXT_LAYER_CHARS = 20
# Render scale for OCR: 2x of 72 dpi is ~144 dpi, enough for body text without huge bitmaps.
RENDER_SCALE = 2.0
# A page too big for OCR_MAX_PIXELS at RENDER_SCALE is rendered smaller, but not below 72 dpi:
# there body text is ~10 px high, the least OCR reads, so a smaller render would only cost time.
MIN_RENDER_SCALE = 1.0


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
        ocr_text = _ocr_rendered_page(page, page_number, ctx)
    else:
        ocr_text = _ocr_large_images(page, page_number, ctx)
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


def _ocr_rendered_page(page, page_number: int, ctx: LoadContext) -> str:
    from server.knowledge_base.loaders.ocr import ocr_image

    scale = _render_scale(page, page_number, ctx)
    if scale is None:
        return ""
    bitmap = page.render(scale=scale)
    try:
        return ocr_image(bitmap.to_pil())
    finally:
        bitmap.close()


def _render_scale(page, page_number: int, ctx: LoadContext) -> float | None:
    """RENDER_SCALE, or less so the bitmap fits OCR_MAX_PIXELS; None (with a note) when even 72 dpi does not.

    Checked from the page size before rendering: a huge page would otherwise allocate gigabytes.
    """
    width, height = page.get_size()
    budget = ocr_max_pixels()
    area = max(width * height, 1.0)
    scale = min(RENDER_SCALE, math.sqrt(budget / area))
    if scale >= MIN_RENDER_SCALE:
        return scale
    note = (
        f"page {page_number} was not OCR'd: it is {width:.0f}x{height:.0f} pt, {width * height:.0f} pixels even at "
        f"72 dpi, over the OCR limit of {budget} pixels (OCR_MAX_PIXELS)"
    )
    logger.warning("%s: %s", ctx.source, note)
    ctx.note(note)
    return None


def _ocr_large_images(page, page_number: int, ctx: LoadContext) -> str:
    import pypdfium2.raw as pdfium_c

    from server.knowledge_base.loaders.ocr import ocr_image

    threshold = ctx.pdf_ocr_threshold
    page_width, page_height = page.get_size()
    texts = []
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
        left, bottom, right, top = image.get_bounds()
        if (right - left) < threshold[0] * page_width or (top - bottom) < threshold[1] * page_height:
            continue
        try:
            check_pixels(*image.get_px_size(), what=f"picture on page {page_number}")  # before pdfium decodes it
            texts.append(ocr_image(image.get_bitmap(render=True).to_pil()))
        except LimitExceeded as exc:
            logger.warning("%s: skipping a picture: %s", ctx.source, exc)
            ctx.note(f"a picture was not OCR'd: {exc}")
        except Exception as exc:  # one unreadable picture must not lose the page's other text
            logger.debug("skipping a PDF image that could not be decoded: %s", exc)
    return "\n".join(t for t in texts if t.strip())
