"""Detects a generation stuck in a loop, so the worker can end it instead of running to max_tokens.

Small models at low temperature fall into loops ("The REST API uses port 7861." for ten minutes).
Two shapes are caught in the recent part of the text:

- the tail is one unit repeated back to back ``repeats`` times ("A. B. A. B. A. B. ");
- one sentence of some length occurs ``repeats + 1`` times, with anything between
  ("1. X.\\n2. X.\\n3. X.\\n4. X.").

A unit must hold at least ``min_chars`` characters and not itself be a repetition of something
shorter and hold some letters or digits, so rules ("-----"), table borders and short refrains
are left alone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"[.!?。！？；;\n]+")
_END_PUNCTUATION = re.compile(r"[.!?。！？；;]+")
_WORD = re.compile(r"\w")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)、]?)\s*")


@dataclass(frozen=True)
class Repetition:
    unit: str  # the repeated text
    keep: int  # characters of the text to keep: everything up to the end of the unit's first copy


@dataclass(frozen=True)
class RepetitionGuard:
    repeats: int = 3
    min_chars: int = 10
    window: int = 2000

    def check(self, text: str) -> Repetition | None:
        """The loop ``text`` ends in, or None."""
        if self.repeats < 2:
            return None
        return self._repeated_tail(text) or self._repeated_sentence(text)

    def _repeated_tail(self, text: str) -> Repetition | None:
        tail = text[-self.window :]
        end = len(tail)
        for size in range(self.min_chars, end // self.repeats + 1):
            # Cheap test first (checked at every token): the last character recurs one period back.
            if tail[end - 1] != tail[end - 1 - size]:
                continue
            unit = tail[-size:]
            if tail.endswith(unit * self.repeats) and _is_primitive(unit) and _has_words(unit):
                first_copy_end = _loop_start(text, size, self.repeats) + size
                return Repetition(unit=unit.strip(), keep=_through_sentence_end(text, first_copy_end))
        return None

    def _repeated_sentence(self, text: str) -> Repetition | None:
        start = max(0, len(text) - self.window)
        counts: Counter[str] = Counter()
        first_end: dict[str, int] = {}
        position = start
        for piece in _SENTENCE_END.split(text[start:]):
            end = text.find(piece, position) + len(piece)
            position = end
            sentence = _LIST_MARKER.sub("", piece).strip()
            if len(sentence) < self.min_chars or not _has_words(sentence):
                continue
            counts[sentence] += 1
            first_end.setdefault(sentence, end)
            if counts[sentence] > self.repeats:
                return Repetition(unit=sentence, keep=_through_sentence_end(text, first_end[sentence]))
        return None


def _is_primitive(unit: str) -> bool:
    """True when ``unit`` is not a shorter string repeated ("abab" is not; "abc" is)."""
    return (unit + unit).find(unit, 1) == len(unit)


def _has_words(text: str) -> bool:
    return len(_WORD.findall(text)) >= 2


def _loop_start(text: str, size: int, repeats: int) -> int:
    """Where the loop of period ``size`` that ``text`` ends in began."""
    start = len(text) - size * repeats
    while start > 0 and text[start - 1] == text[start - 1 + size]:
        start -= 1
    return start


def _through_sentence_end(text: str, end: int) -> int:
    match = _END_PUNCTUATION.match(text, end)
    return match.end() if match else end
