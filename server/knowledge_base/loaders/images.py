"""Image files (.png .jpg .jpeg .bmp ...): the whole image through OCR."""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document
from PIL import Image, UnidentifiedImageError

from server.knowledge_base.loaders.base import LoadContext, LoaderError
from server.knowledge_base.loaders.limits import check_pixels
from server.knowledge_base.loaders.ocr import ocr_image


def load_image(path: Path, ctx: LoadContext) -> list[Document]:
    image = _open_image(path)
    if not ctx.ocr:
        return []  # load_file then reports that OCR is off and nothing could be read
    return [ctx.ocr_document(ocr_image(image))]


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            check_pixels(*image.size, what="image")  # from the header, before the pixels are decoded
            image.load()
            return image.copy()
    except UnidentifiedImageError:
        raise LoaderError(f"not a readable {path.suffix.lower()} image (damaged, or a different format)")
    except Image.DecompressionBombError as exc:
        raise LoaderError(f"image is too large to OCR: {exc}")
    except OSError as exc:
        raise LoaderError(f"image is truncated or damaged: {exc}")
