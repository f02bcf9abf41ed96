"""A BM25 index that changes in place: documents are added and removed one by one.

Libraries such as bm25s precompute a static score matrix and must re-index the whole corpus on
every change; a knowledge base changes a file at a time (and a chunk at a time through
update_docs_by_id), so this index keeps per-term postings instead and scores a query over the
postings of its terms only, with numpy.

Memory is what limits a big knowledge base on one machine, so postings are packed arrays, not
Python dicts: each document gets a slot (a row in flat arrays of keys and lengths), and each term
keeps the slots holding it and their counts in two typed arrays, 6 bytes a posting instead of the
~100 of a dict entry. Removing a document only zeroes its slot's length and lowers the document
frequency of its terms; its postings stay until dead ones make up half of a term's array (then that
array is filtered), and slots are renumbered once dead slots outnumber live ones. Scoring reads the
arrays in place and skips dead slots.

``keep_terms=True`` (the default) also keeps every document's term counts, so a document can be
removed by its key alone. A caller that stores the terms itself (the FAISS store keeps them in
SQLite) builds it with ``keep_terms=False`` and passes them to ``remove``. Scores are the same
either way.

Not thread-safe, like the dicts it replaces: the vector-store cache lets one thread at a time use a store.

Scoring is Okapi BM25 with Lucene's non-negative idf: log(1 + (N - df + 0.5) / (df + 0.5)).
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass

import numpy as np

K1 = 1.2
B = 0.75
MAX_COUNT = 65535  # counts are stored as uint16; a term repeated more often in one chunk saturates anyway
MIN_SLOTS_TO_RENUMBER = 1024


@dataclass(frozen=True)
class KeywordHit:
    key: int
    score: float


class _Postings:
    """The slots holding one term, with the term's count in each; ``live`` of them are current documents."""

    __slots__ = ("slots", "counts", "live")

    def __init__(self) -> None:
        self.slots = array("i")
        self.counts = array("H")
        self.live = 0

    def views(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.slots, dtype=np.int32), np.frombuffer(self.counts, dtype=np.uint16)


class BM25Index:
    def __init__(self, keep_terms: bool = True) -> None:
        self._keep_terms = keep_terms
        self._doc_terms: dict[int, dict[str, int]] = {}  # key -> term counts (only with keep_terms)
        self._slot_of: dict[int, int] = {}  # key -> slot
        self._slot_keys = array("q")  # slot -> key
        self._slot_lengths = array("f")  # slot -> document length; 0 once removed
        self._postings: dict[str, _Postings] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: int) -> bool:
        return key in self._slot_of

    def keys(self) -> set[int]:
        return set(self._slot_of)

    # ---- changes -----------------------------------------------------------------
    def add(self, key: int, terms: list[str] | dict[str, int]) -> None:
        if key in self._slot_of:
            self.remove(key)
        counts = dict(terms) if isinstance(terms, dict) else dict(Counter(terms))
        if self._keep_terms:
            self._doc_terms[key] = counts
        length = sum(counts.values())
        slot = len(self._slot_keys)
        self._slot_of[key] = slot
        self._slot_keys.append(key)
        self._slot_lengths.append(float(length))  # exact: float32 holds integers up to 2**24
        self._total_length += length
        postings = self._postings
        for term, count in counts.items():
            holders = postings.get(term)
            if holders is None:
                holders = postings[term] = _Postings()
            holders.slots.append(slot)
            holders.counts.append(min(count, MAX_COUNT))
            holders.live += 1

    def remove(self, key: int, terms: list[str] | dict[str, int] | None = None) -> None:
        """Forget a document. ``terms`` (what it was added with) spares a scan of every posting when the
        index does not keep them; wrong or missing terms are still handled, by that scan."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        kept = self._doc_terms.pop(key, None)
        given = kept if kept is not None else (_counts(terms) if terms is not None else None)
        length = self._doc_length(slot)
        self._total_length -= length
        self._slot_lengths[slot] = 0.0
        if given is None or sum(given.values()) != length or any(t not in self._postings for t in given):
            given = self._scan_terms(slot)  # the caller's terms are not the added ones: find them
        for term in given:
            self._drop_posting(term)
        self._renumber_if_sparse()

    def _drop_posting(self, term: str) -> None:
        holders = self._postings[term]
        holders.live -= 1
        if holders.live == 0:
            del self._postings[term]
        elif holders.live * 2 < len(holders.slots):
            self._compact(holders)

    def _compact(self, holders: _Postings) -> None:
        """Drop the postings of removed documents from one term's arrays."""
        slots, counts = holders.views()
        alive = np.frombuffer(self._slot_lengths, dtype=np.float32)[slots] > 0
        kept_slots, kept_counts = slots[alive].copy(), counts[alive].copy()
        del slots, counts  # release the views: an array that exports its buffer cannot be resized
        holders.slots, holders.counts = array("i", kept_slots.tobytes()), array("H", kept_counts.tobytes())

    def _renumber_if_sparse(self) -> None:
        """Give live documents consecutive slots again once most slots belong to removed documents."""
        total = len(self._slot_keys)
        if total < MIN_SLOTS_TO_RENUMBER or len(self._slot_of) * 2 >= total:
            return
        lengths = np.frombuffer(self._slot_lengths, dtype=np.float32)
        alive = lengths > 0
        new_slot = np.cumsum(alive, dtype=np.int64) - 1
        for holders in self._postings.values():
            self._compact(holders)
            slots = np.frombuffer(holders.slots, dtype=np.int32)
            renumbered = new_slot[slots].astype(np.int32)
            del slots
            holders.slots = array("i", renumbered.tobytes())
        keys = np.frombuffer(self._slot_keys, dtype=np.int64)[alive].copy()
        kept_lengths = lengths[alive].copy()
        del lengths
        self._slot_keys = array("q", keys.tobytes())
        self._slot_lengths = array("f", kept_lengths.tobytes())
        self._slot_of = {int(key): slot for slot, key in enumerate(keys)}

    def _scan_terms(self, slot: int) -> dict[str, int]:
        found = {}
        for term, holders in self._postings.items():
            slots, counts = holders.views()
            positions = np.flatnonzero(slots == slot)
            if len(positions):
                found[term] = int(counts[positions[0]])
        return found

    def _doc_length(self, slot: int) -> int:
        return int(round(self._slot_lengths[slot]))

    def clear(self) -> None:
        self.__init__(self._keep_terms)

    # ---- scoring -----------------------------------------------------------------
    def search(self, query_terms: list[str], top_k: int) -> list[KeywordHit]:
        """The ``top_k`` best-scoring documents that share at least one term with the query."""
        if not self._slot_of or top_k <= 0:
            return []
        average_length = self._average_length()
        lengths = np.frombuffer(self._slot_lengths, dtype=np.float32)
        slot_parts, score_parts = [], []
        for term, query_count in Counter(query_terms).items():
            holders = self._postings.get(term)
            if holders is None:
                continue
            slots, counts = holders.views()
            slot_lengths = lengths[slots].astype(np.float64)
            alive = slot_lengths > 0
            if not alive.all():
                slots, counts, slot_lengths = slots[alive], counts[alive], slot_lengths[alive]
            weight = self._idf(holders.live) * query_count
            score_parts.append(weight * _saturation(counts.astype(np.float64), slot_lengths, average_length))
            slot_parts.append(slots)
        if not slot_parts:
            return []
        unique_slots, positions = np.unique(np.concatenate(slot_parts), return_inverse=True)
        totals = np.bincount(positions, weights=np.concatenate(score_parts))
        best = _top_indices(totals, top_k)
        return [KeywordHit(int(self._slot_keys[unique_slots[i]]), float(totals[i])) for i in best]

    def scores(self, query_terms: list[str], keys: list[int]) -> list[float]:
        """The BM25 score of each of ``keys`` for the query (0.0 for unknown keys)."""
        if not self._slot_of:
            return [0.0] * len(keys)
        average_length = self._average_length()
        wanted = np.array([self._slot_of.get(key, -1) for key in keys], dtype=np.int64)
        lengths = np.array([self._slot_lengths[s] if s >= 0 else 0.0 for s in wanted], dtype=np.float64)
        totals = np.zeros(len(keys), dtype=np.float64)
        for term, query_count in Counter(query_terms).items():
            holders = self._postings.get(term)
            if holders is None:
                continue
            slots, counts = holders.views()
            hit = np.isin(slots, wanted[wanted >= 0])
            count_by_slot = dict(zip(slots[hit].tolist(), counts[hit].tolist(), strict=True))
            term_counts = np.array([count_by_slot.get(int(s), 0) for s in wanted], dtype=np.float64)
            present = (term_counts > 0) & (lengths > 0)
            weight = self._idf(holders.live) * query_count
            totals[present] += weight * _saturation(term_counts[present], lengths[present], average_length)
        return [float(total) for total in totals]

    def _average_length(self) -> float:
        return self._total_length / len(self._slot_of) or 1.0

    def _idf(self, document_frequency: int) -> float:
        total = len(self._slot_of)
        return float(np.log1p((total - document_frequency + 0.5) / (document_frequency + 0.5)))

    # ---- saving ------------------------------------------------------------------
    def term_counts(self, key: int) -> dict[str, int] | None:
        """A document's term counts (without keep_terms: found by a scan of every posting)."""
        slot = self._slot_of.get(key)
        if slot is None:
            return None
        if self._keep_terms:
            return self._doc_terms[key]
        return self._scan_terms(slot)

    # ---- persisting -----------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as plain arrays (for np.savez: nothing pickled), each term's postings one after the
        other. Documents' own term counts (keep_terms) are not included: for stores that keep them."""
        if self._keep_terms:
            raise ValueError("only an index built with keep_terms=False can be saved as arrays")
        terms = [term.encode("utf-8") for term in self._postings]
        holders = list(self._postings.values())
        return {
            "slot_keys": np.frombuffer(self._slot_keys, dtype=np.int64).copy(),
            "slot_lengths": np.frombuffer(self._slot_lengths, dtype=np.float32).copy(),
            "live_slots": np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of)),
            "term_bytes": np.frombuffer(b"".join(terms), dtype=np.uint8),
            "term_ends": np.cumsum([len(term) for term in terms], dtype=np.int64),
            "posting_ends": np.cumsum([len(h.slots) for h in holders], dtype=np.int64),
            "live": np.array([h.live for h in holders], dtype=np.int64),
            "slots": np.frombuffer(b"".join([h.slots.tobytes() for h in holders]), dtype=np.int32),
            "counts": np.frombuffer(b"".join([h.counts.tobytes() for h in holders]), dtype=np.uint16),
        }

    @classmethod
    def from_arrays(cls, arrays) -> BM25Index:
        """The index ``to_arrays`` saved; ValueError when the arrays do not fit together."""
        keys, lengths, live_slots = arrays["slot_keys"], arrays["slot_lengths"], arrays["live_slots"]
        term_bytes, term_ends, posting_ends = arrays["term_bytes"], arrays["term_ends"], arrays["posting_ends"]
        slots, counts, live = arrays["slots"], arrays["counts"], arrays["live"]
        consistent = (
            len(keys) == len(lengths)
            and len(term_ends) == len(posting_ends) == len(live)
            and len(slots) == len(counts) == (int(posting_ends[-1]) if len(posting_ends) else 0)
            and len(term_bytes) == (int(term_ends[-1]) if len(term_ends) else 0)
            and (not len(slots) or 0 <= int(slots.min()) <= int(slots.max()) < len(keys))
            and (not len(live_slots) or 0 <= int(live_slots.min()) <= int(live_slots.max()) < len(keys))
        )
        if not consistent:
            raise ValueError("keyword index arrays do not fit together")
        index = cls(keep_terms=False)
        index._slot_keys = array("q", keys.astype(np.int64).tobytes())
        index._slot_lengths = array("f", lengths.astype(np.float32).tobytes())
        index._slot_of = dict(zip(keys[live_slots].tolist(), live_slots.tolist(), strict=True))
        index._total_length = int(round(float(lengths[live_slots].astype(np.float64).sum())))
        raw_terms, term_start, posting_start = term_bytes.tobytes(), 0, 0
        slot_bytes, count_bytes = slots.astype(np.int32).tobytes(), counts.astype(np.uint16).tobytes()
        for term_end, posting_end, live_count in zip(
            term_ends.tolist(), posting_ends.tolist(), live.tolist(), strict=True
        ):
            holders = _Postings()
            holders.slots = array("i", slot_bytes[posting_start * 4 : posting_end * 4])
            holders.counts = array("H", count_bytes[posting_start * 2 : posting_end * 2])
            holders.live = live_count
            index._postings[raw_terms[term_start:term_end].decode("utf-8")] = holders
            term_start, posting_start = term_end, posting_end
        return index


def _counts(terms: list[str] | dict[str, int]) -> dict[str, int]:
    return dict(terms) if isinstance(terms, dict) else dict(Counter(terms))


def _saturation(counts, lengths, average_length: float):
    return counts * (K1 + 1.0) / (counts + K1 * (1.0 - B + B * lengths / average_length))


def _top_indices(values: np.ndarray, top_k: int) -> np.ndarray:
    if len(values) > top_k:
        part = np.argpartition(-values, top_k - 1)[:top_k]
    else:
        part = np.arange(len(values))
    return part[np.argsort(-values[part], kind="stable")]
