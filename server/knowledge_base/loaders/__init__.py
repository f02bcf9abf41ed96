"""Document loaders: any supported file in, a list of langchain Documents out.

``load_file`` is a plain top-level function with picklable arguments and results, so the ingestion
pipeline can run it in ProcessPoolExecutor workers. Every failure surfaces as ``LoaderError`` whose
message says what is wrong with the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError
from server.knowledge_base.loaders.registry import LOADERS, LoaderSpec

__all__ = ["SUPPORTED_EXTS", "LoaderError", "is_table_file", "load_file", "loader_name_for"]

logger = logging.getLogger(__name__)

SUPPORTED_EXTS: frozenset[str] = frozenset(LOADERS)


def _extension(path_or_name: str | os.PathLike) -> str:
    return Path(path_or_name).suffix.lower()


def _spec_for(path_or_name: str | os.PathLike) -> LoaderSpec:
    ext = _extension(path_or_name)
    spec = LOADERS.get(ext)
    if spec is None:
        shown = f"'{ext}'" if ext else "without an extension"
        raise LoaderError(f"unsupported file type {shown} (supported: {', '.join(sorted(SUPPORTED_EXTS))})")
    return spec


def loader_name_for(path_or_name: str | os.PathLike) -> str:
    """Name of the loader that reads this file, as stored in the knowledge-base DB."""
    return _spec_for(path_or_name).name


def is_table_file(path_or_name: str | os.PathLike) -> bool:
    """True for row-per-Document tables (.csv .tsv .xlsx .xls), which the splitter must not split."""
    spec = LOADERS.get(_extension(path_or_name))
    return spec is not None and spec.is_table


def load_file(
    path: str | os.PathLike,
    *,
    ocr: bool = True,
    pdf_ocr_threshold: tuple[float, float] = (0.6, 0.6),
) -> list[Document]:
    """Read one file into Documents with non-empty text; raise LoaderError saying why when that fails."""
    spec = _spec_for(path)
    file_path = Path(path)
    _check_readable(file_path)
    ctx = LoadContext(source=str(path), ext=_extension(path), ocr=ocr, pdf_ocr_threshold=tuple(pdf_ocr_threshold))
    try:
        docs = spec.load(file_path, ctx)
    except LoaderError:
        raise
    except MemoryError:
        raise LoaderError("file is too large to load into memory")
    except Exception as exc:  # any library failure becomes a reason the user can act on
        logger.debug("loader %s failed on %s", spec.name, path, exc_info=True)
        raise LoaderError(f"could not read {ctx.ext} file with {spec.name}: {type(exc).__name__}: {exc}")
    docs = [doc for doc in docs if doc.page_content.strip()]
    if not docs:
        hint = "" if ocr else " (OCR is disabled, so text in images is not read)"
        skipped = "".join(f"; {note}" for note in ctx.notes)
        raise LoaderError(f"no text could be extracted from the file{hint}{skipped}")
    return docs


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise LoaderError("file not found")
    if not path.is_file():
        raise LoaderError("not a regular file")
    if path.stat().st_size == 0:
        raise LoaderError("file is empty")
