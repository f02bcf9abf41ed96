"""Retrieval evaluation on a user's own questions: hit@1/3/5, MRR and recall@k per search mode.

No LLM is involved. A questions file names, for each question, the file(s) the answer is in
and/or a piece of text the answer contains; a question is found at the first rank whose chunk
comes from an expected file or contains the expected text.

Formats (UTF-8): JSON Lines, one object per line, or CSV with a header row. Fields:
  question        the question (also accepted: query)
  expected_file   a file name; in JSONL also a list of names (also accepted: expected_files, source)
  expected_text   text the right chunk contains (also accepted: answer)
Each question needs expected_file or expected_text.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server.knowledge_base.search import SEARCH_MODES
from server.knowledge_base.vector_stores.faiss_store import ScoredChunk

RERANKED_MODE = "hybrid+rerank"
EVAL_MODES = (*SEARCH_MODES, RERANKED_MODE)
CUTOFFS = (1, 3, 5)
MAX_MISSES_LISTED = 50


class QuestionsFileError(ValueError):
    """The questions file cannot be used; the message names the line."""


@dataclass(frozen=True)
class Question:
    text: str
    expected_files: tuple[str, ...] = ()
    expected_text: str = ""


@dataclass
class ModeResult:
    mode: str
    questions: int = 0
    found_at: list[int | None] = field(default_factory=list)  # 1-based rank of the first right chunk
    recalls: list[float] = field(default_factory=list)  # share of expected files within top_k
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)

    def summary(self, top_k: int) -> dict:
        count = max(1, len(self.found_at))
        metrics = {f"hit@{k}": sum(1 for r in self.found_at if r is not None and r <= k) / count for k in CUTOFFS}
        metrics["mrr"] = sum(1.0 / r for r in self.found_at if r is not None) / count
        metrics[f"recall@{top_k}"] = sum(self.recalls) / max(1, len(self.recalls)) if self.recalls else None
        return {
            "mode": self.mode,
            "questions": len(self.found_at),
            **{name: (round(value, 4) if value is not None else None) for name, value in metrics.items()},
            "mean_search_ms": round(1000 * self.seconds / count, 2),
            "misses": self.misses[:MAX_MISSES_LISTED],
        }


def parse_questions(data: bytes, file_name: str = "") -> list[Question]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QuestionsFileError(f"questions file is not UTF-8 text: {exc}") from None
    rows = _csv_rows(text) if file_name.lower().endswith(".csv") else _jsonl_rows(text)
    questions = [_question(line, row) for line, row in rows]
    if not questions:
        raise QuestionsFileError("questions file has no questions")
    return questions


def _jsonl_rows(text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise QuestionsFileError(f"line {number}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise QuestionsFileError(f"line {number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def _csv_rows(text: str):
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise QuestionsFileError("line 1: a CSV questions file needs a header row")
    for row in reader:
        if any((value or "").strip() for value in row.values() if isinstance(value, str)):
            yield reader.line_num, row


def _question(line: int, row: dict) -> Question:
    question = row.get("question", row.get("query"))
    if not isinstance(question, str) or not question.strip():
        raise QuestionsFileError(f"line {line}: 'question' must be a non-empty string")
    files = row.get("expected_file", row.get("expected_files", row.get("source")))
    if files is None or files == "":
        files = []
    elif isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise QuestionsFileError(f"line {line}: 'expected_file' must be a file name or a list of names")
    expected_text = row.get("expected_text", row.get("answer")) or ""
    if not isinstance(expected_text, str):
        raise QuestionsFileError(f"line {line}: 'expected_text' must be a string")
    if not files and not expected_text.strip():
        raise QuestionsFileError(f"line {line}: give 'expected_file' or 'expected_text'")
    return Question(question.strip(), tuple(files), expected_text.strip())


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def is_right(question: Question, hit: ScoredChunk) -> bool:
    if question.expected_files and hit.chunk.metadata.get("source") in question.expected_files:
        return True
    return bool(question.expected_text) and _compact(question.expected_text) in _compact(hit.chunk.page_content)


Search = Callable[[str, str, int], list[ScoredChunk]]  # (question, mode, top_k) -> hits


def evaluate(questions: list[Question], modes: list[str], search: Search, top_k: int = 5) -> list[dict]:
    """One summary per mode: hit@1/3/5, MRR, recall@top_k (questions with expected files) and speed."""
    results = []
    for mode in modes:
        result = ModeResult(mode)
        search(questions[0].text, mode, top_k)  # untimed: loads the models and the store, so speed is steady state
        for question in questions:
            started = time.perf_counter()
            hits = search(question.text, mode, top_k)
            result.seconds += time.perf_counter() - started
            rank = next((n for n, hit in enumerate(hits, start=1) if is_right(question, hit)), None)
            result.found_at.append(rank)
            if rank is None:
                result.misses.append(question.text)
            if question.expected_files:
                found = {hit.chunk.metadata.get("source") for hit in hits}
                result.recalls.append(len(found.intersection(question.expected_files)) / len(question.expected_files))
        results.append(result.summary(top_k))
    return results
