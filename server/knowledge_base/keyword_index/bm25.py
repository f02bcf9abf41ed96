"""A BM25 index that changes in place: documents are added and removed one by one.

Libraries such as bm25s precompute a static score matrix and must re-index the whole corpus on
every change; a knowledge base changes a file at a time (and a chunk at a time through
update_docs_by_id), so this index keeps per-term postings instead and scores a query over the
postings of its terms only, with numpy. Term arrays are cached per term and dropped when a
document holding the term changes.

Memory: the postings (term -> document -> count) and each document's length are all it needs to
score. ``keep_terms=True`` (the default) also keeps every document's term counts, so a document can
be removed by its key alone. A caller that stores the terms itself (the FAISS store keeps them in
SQLite) builds it with ``keep_terms=False`` and passes them to ``remove``: that roughly halves the
index's memory. Scores are the same either way.

Scoring is Okapi BM25 with Lucene's non-negative idf: log(1 + (N - df + 0.5) / (df + 0.5)).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

K1 = 1.2
B = 0.75


@dataclass(frozen=True)
class KeywordHit:
    key: int
    score: float


class BM25Index:
    def __init__(self, keep_terms: bool = True) -> None:
        self._keep_terms = keep_terms
        self._doc_terms: dict[int, dict[str, int]] = {}  # key -> term counts (only with keep_terms)
        self._doc_length: dict[int, int] = {}
        self._postings: dict[str, dict[int, int]] = {}  # term -> key -> count
        self._total_length = 0
        self._term_arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # keys, counts, lengths

    def __len__(self) -> int:
        return len(self._doc_length)

    def __contains__(self, key: int) -> bool:
        return key in self._doc_length

    def keys(self) -> set[int]:
        return set(self._doc_length)

    # ---- changes -----------------------------------------------------------------
    def add(self, key: int, terms: list[str] | dict[str, int]) -> None:
        if key in self._doc_length:
            self.remove(key)
        counts = dict(terms) if isinstance(terms, dict) else dict(Counter(terms))
        if self._keep_terms:
            self._doc_terms[key] = counts
        length = sum(counts.values())
        self._doc_length[key] = length
        self._total_length += length
        postings, cached = self._postings, self._term_arrays
        for term, count in counts.items():
            holders = postings.get(term)
            if holders is None:
                postings[term] = {key: count}
            else:
                holders[key] = count
            if cached:  # empty while a store loads: nothing to invalidate
                cached.pop(term, None)

    def remove(self, key: int, terms: list[str] | dict[str, int] | None = None) -> None:
        """Forget a document. ``terms`` (what it was added with) spares a scan of every posting when the
        index does not keep them; wrong or missing terms are still handled, by that scan."""
        length = self._doc_length.pop(key, None)
        if length is None:
            return
        self._total_length -= length
        kept = self._doc_terms.pop(key, None)
        candidates = kept if kept is not None else (terms if terms is not None else ())
        removed_length = sum(self._remove_posting(term, key) for term in dict.fromkeys(candidates))
        if removed_length != length:  # the caller's terms were not the added ones: find the rest
            for term in [t for t, postings in self._postings.items() if key in postings]:
                self._remove_posting(term, key)

    def _remove_posting(self, term: str, key: int) -> int:
        postings = self._postings.get(term)
        if postings is None or key not in postings:
            return 0
        count = postings.pop(key)
        if not postings:
            del self._postings[term]
        self._term_arrays.pop(term, None)
        return count

    def clear(self) -> None:
        self.__init__(self._keep_terms)

    # ---- scoring -----------------------------------------------------------------
    def search(self, query_terms: list[str], top_k: int) -> list[KeywordHit]:
        """The ``top_k`` best-scoring documents that share at least one term with the query."""
        if not self._doc_length or top_k <= 0:
            return []
        average_length = self._total_length / len(self._doc_length) or 1.0
        key_parts, score_parts = [], []
        for term, query_count in Counter(query_terms).items():
            arrays = self._arrays(term)
            if arrays is None:
                continue
            keys, counts, lengths = arrays
            weight = self._idf(len(keys)) * query_count
            score_parts.append(weight * _saturation(counts, lengths, average_length))
            key_parts.append(keys)
        if not key_parts:
            return []
        unique_keys, positions = np.unique(np.concatenate(key_parts), return_inverse=True)
        totals = np.bincount(positions, weights=np.concatenate(score_parts))
        best = _top_indices(totals, top_k)
        return [KeywordHit(int(unique_keys[i]), float(totals[i])) for i in best]

    def scores(self, query_terms: list[str], keys: list[int]) -> list[float]:
        """The BM25 score of each of ``keys`` for the query (0.0 for unknown keys)."""
        if not self._doc_length:
            return [0.0] * len(keys)
        average_length = self._total_length / len(self._doc_length) or 1.0
        weights = {
            term: (self._idf(len(self._postings[term])) * n, self._postings[term])
            for term, n in Counter(query_terms).items()
            if term in self._postings
        }
        result = []
        for key in keys:
            length = self._doc_length.get(key)
            if not length:
                result.append(0.0)
                continue
            total = sum(
                weight * float(_saturation(np.float64(postings[key]), np.float64(length), average_length))
                for weight, postings in weights.values()
                if key in postings
            )
            result.append(total)
        return result

    def _idf(self, document_frequency: int) -> float:
        total = len(self._doc_length)
        return float(np.log1p((total - document_frequency + 0.5) / (document_frequency + 0.5)))

    def _arrays(self, term: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        cached = self._term_arrays.get(term)
        if cached is None:
            postings = self._postings.get(term)
            if not postings:
                return None
            keys = np.fromiter(postings.keys(), dtype=np.int64, count=len(postings))
            counts = np.fromiter(postings.values(), dtype=np.float64, count=len(postings))
            lengths = np.fromiter((self._doc_length[k] for k in postings), dtype=np.float64, count=len(postings))
            cached = self._term_arrays[term] = (keys, counts, lengths)
        return cached

    # ---- saving ------------------------------------------------------------------
    def term_counts(self, key: int) -> dict[str, int] | None:
        """A document's term counts (without keep_terms: found by a scan of every posting)."""
        if key not in self._doc_length:
            return None
        if self._keep_terms:
            return self._doc_terms[key]
        return {term: postings[key] for term, postings in self._postings.items() if key in postings}


def _saturation(counts, lengths, average_length: float):
    return counts * (K1 + 1.0) / (counts + K1 * (1.0 - B + B * lengths / average_length))


def _top_indices(values: np.ndarray, top_k: int) -> np.ndarray:
    if len(values) > top_k:
        part = np.argpartition(-values, top_k - 1)[:top_k]
    else:
        part = np.arange(len(values))
    return part[np.argsort(-values[part], kind="stable")]
