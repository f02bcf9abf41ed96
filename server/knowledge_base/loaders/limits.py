"""Limits on untrusted files, checked before a library decodes, renders or unpacks something big.

Uploads are untrusted: a 333-byte PDF can declare a page that renders to billions of pixels, and a
1 MB zip can unpack to gigabytes. Each check raises LimitExceeded (a LoaderError) whose message names
the limit and the setting that raises it, so the file fails alone with a reason the user can act on.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from server.knowledge_base.loaders.base import LoaderError

T = TypeVar("T")

# Members smaller than this unpacked are never refused for their ratio (tiny XML compresses well too).
RATIO_GRACE_BYTES = 1024 * 1024


class LimitExceeded(LoaderError):
    """The file is over one of the configured limits for untrusted files."""


def _settings():
    from configs import get_settings

    return get_settings()


def ocr_max_pixels() -> int:
    return _settings().OCR_MAX_PIXELS


def check_pixels(width: float, height: float, what: str) -> None:
    """Refuse an image of width x height pixels before it is decoded or rendered."""
    budget = ocr_max_pixels()
    if width * height > budget:
        raise LimitExceeded(
            f"{what} is {int(width)}x{int(height)} pixels, over the OCR limit of {budget} pixels (OCR_MAX_PIXELS)"
        )


def check_zip_package(path: Path, kind: str) -> None:
    """Refuse a zip-based document (docx, pptx, xlsx, epub) whose members would unpack too big.

    Python's zipfile stops each member at its declared size, so the declared sizes bound what the
    document libraries can unpack. Files that are not zips are left to the library to reject.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    settings = _settings()
    if len(members) > settings.MAX_OFFICE_PARTS:
        raise LimitExceeded(
            f"{kind} file has {len(members)} parts, over the limit of {settings.MAX_OFFICE_PARTS} (MAX_OFFICE_PARTS)"
        )
    total = sum(member.file_size for member in members)
    if total > settings.MAX_OFFICE_UNZIPPED_BYTES:
        raise LimitExceeded(
            f"{kind} file unpacks to {total} bytes, over the limit of {settings.MAX_OFFICE_UNZIPPED_BYTES} bytes "
            "(MAX_OFFICE_UNZIPPED_BYTES)"
        )
    for member in members:
        _check_ratio(member, kind, settings.MAX_OFFICE_COMPRESSION_RATIO)


def _check_ratio(member: zipfile.ZipInfo, kind: str, max_ratio: float) -> None:
    if member.file_size <= RATIO_GRACE_BYTES:
        return
    ratio = member.file_size / max(member.compress_size, 1)
    if ratio > max_ratio:
        raise LimitExceeded(
            f"{kind} part {member.filename} unpacks {ratio:.0f} times its packed size ({member.file_size} bytes), "
            f"over the limit of {max_ratio:g} (MAX_OFFICE_COMPRESSION_RATIO): a zip bomb?"
        )


class RowBudget:
    """Rows and cells one table file may have, shared by its sheets; empty ones count, as they cost time too."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.limit, self.cell_limit = _settings().MAX_TABLE_ROWS, _settings().MAX_TABLE_CELLS
        self.used = self.cells = 0

    def rows(self, rows: Iterable[T]) -> Iterator[T]:
        """The rows, failing as soon as the file has more than the limits (before reading them all)."""
        for row in rows:
            self.used += 1
            self.cells += len(row)
            if self.used > self.limit:
                raise LimitExceeded(f"{self.kind} file has more than {self.limit} rows (MAX_TABLE_ROWS)")
            if self.cells > self.cell_limit:
                # One cell in column XFD makes a row 16384 cells wide: a few bytes of XML, much work.
                raise LimitExceeded(f"{self.kind} file has more than {self.cell_limit} cells (MAX_TABLE_CELLS)")
            yield row
