"""Pieces every loader family shares: the error type, the call context and Document building."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document


class LoaderError(Exception):
    """A file could not be turned into text; the message says why, in words a user understands."""


@dataclass(frozen=True)
class LoadContext:
    """What one load_file call passes down to the loader of a file family."""

    source: str
    ext: str
    ocr: bool = True
    pdf_ocr_threshold: tuple[float, float] = (0.6, 0.6)
    # What a loader skipped for a limit (a page not OCR'd); the reason given when no text is left.
    notes: list[str] = field(default_factory=list, compare=False)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def document(self, text: str, **metadata: Any) -> Document:
        return Document(page_content=text, metadata={"source": self.source, **metadata})

    def ocr_document(self, text: str, **metadata: Any) -> Document:
        return self.document(text, ocr=True, **metadata)


def join_nonempty(parts, sep: str = "\n") -> str:
    """Join stripped, non-blank pieces of text."""
    return sep.join(p.strip() for p in parts if p and p.strip())
