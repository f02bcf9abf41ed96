"""A recursive splitter that knows sentence punctuation of Chinese and English.

It tries paragraph breaks first, then line breaks, then sentence ends (。！？ and . ! ?
followed by a space), then clause marks (；; ，,), and keeps each mark with the text
before it, so no chunk starts with a stray full stop.
"""

from __future__ import annotations

import re

from langchain_text_splitters import RecursiveCharacterTextSplitter

SEPARATORS = [
    r"\n\n",
    r"\n",
    r"[。！？]",
    r"[.!?]\s",
    r"[；;]\s?",
    r"[，,]\s?",
]


def _split_keeping_marks(text: str, pattern: str) -> list[str]:
    """Split after every match of pattern, the mark staying at the end of the piece."""
    pieces, start = [], 0
    for match in re.finditer(pattern, text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece]


class ChineseRecursiveTextSplitter(RecursiveCharacterTextSplitter):
    def __init__(self, chunk_size: int = 250, chunk_overlap: int = 50, **kwargs):
        super().__init__(
            separators=SEPARATORS,
            is_separator_regex=True,
            keep_separator="end",
            chunk_size=chunk_size,
            chunk_overlap=min(chunk_overlap, max(chunk_size - 1, 0)),
            **kwargs,
        )

    def _split_text(self, text: str, separators: list[str]) -> list[str]:
        chosen, remaining = separators[-1], []
        for position, separator in enumerate(separators):
            if re.search(separator, text):
                chosen, remaining = separator, separators[position + 1 :]
                break
        pieces = _split_keeping_marks(text, chosen) if re.search(chosen, text) else [text]
        chunks: list[str] = []
        pending: list[str] = []
        for piece in pieces:
            if self._length_function(piece) <= self._chunk_size:
                pending.append(piece)
                continue
            if pending:
                chunks.extend(self._merge_splits(pending, ""))
                pending = []
            if remaining:
                chunks.extend(self._split_text(piece, remaining))
            else:
                chunks.extend(_hard_split(piece, self._chunk_size, self._chunk_overlap))
        if pending:
            chunks.extend(self._merge_splits(pending, ""))
        return [_tidy(chunk) for chunk in chunks if chunk.strip()]


def _hard_split(text: str, size: int, overlap: int) -> list[str]:
    """Last resort for a run of text with no separator at all: fixed windows."""
    step = max(size - overlap, 1)
    return [text[i : i + size] for i in range(0, max(len(text) - overlap, 1), step)]


def _tidy(chunk: str) -> str:
    return re.sub(r"\n{2,}", "\n", chunk.strip())
