"""The part of the Milvus and PostgreSQL stores that does not depend on the server.

Vectors, texts and metadata live on the server; so do each chunk's search terms (counts by term),
made once by the project's tokenizer when the chunk is added. The BM25 side is the project's own
index (keyword_index/), held in memory and built from those stored terms, so keyword scores and the
hybrid fusion mean exactly what they mean on FAISS. (Milvus's own BM25 was measured and not used:
docs/vector_stores.md.) The index keeps only the packed postings, not each chunk's terms (those would
cost several KB a chunk in every API process): a removal is handed the terms by the server, from the
deleted row or from the change log, which keeps them with each deletion.

Other processes may change the same store. Every write block ends by storing a new random "change
marker" next to the data; before each use a store compares the marker with the one it last saw and,
when they differ, catches its keyword index up with the server:
* incrementally, from a change log: rows carry an increasing ``seq``, deletions are logged with one
  from the same numbering, and the store remembers the position it has seen; it reads only the terms
  of rows stored after that position and the ids deleted after it (a foreign write of a few chunks
  costs a few rows, not a re-read of a million). PostgreSQL numbers from a sequence, in a transaction;
  Milvus from a counter kept with the marker (milvus_store.py says why that is safe);
* by a full re-read of every row's terms on first use, and when the log no longer reaches back to
  the store's position (pruned, or the store was cleared).
Where the server has snapshots (PostgreSQL), all of that is read in one: a deletion committed between
two reads would otherwise be lost until the next change.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from server.knowledge_base.keyword_index import BM25Index, tokenize
from server.knowledge_base.vector_stores.base import (
    ScoredChunk,
    StoredChunk,
    VectorStore,
    similarity_to_score,
    unit_rows,
)

# One stored chunk as the servers hand it back: the chunk, its term counts and (when asked) its vector.
Row = tuple[StoredChunk, dict[str, int], np.ndarray | None]


class RemoteStore(VectorStore):
    remote = True

    def __init__(self, dimension: int):
        self.dimension = dimension
        self.keywords = BM25Index(keep_terms=False)
        self._keys: dict[str, int] = {}  # doc id -> key in the keyword index
        self._doc_ids: dict[int, str] = {}
        self._next_key = 0
        self._marker: str | None = None
        # Change-log position the keyword index reflects (None: unknown, the next catch-up is a full rebuild).
        self._position: int | None = None
        self._current_under_lock = False  # this write block began by catching up under the writers' lock
        self.dirty = False
        # What keeping up cost (read by tests and benchmarks): rows whose terms were read, full rebuilds.
        self.keyword_rows_read = 0
        self.full_rebuilds = 0

    # ---- what a server must provide ----------------------------------------------------
    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _insert(self, rows: list[Row]) -> None: ...

    @abstractmethod
    def _delete(self, doc_ids: list[str]) -> dict[str, dict[str, int]]:
        """Delete those of ``doc_ids`` that are stored and log them; their terms, by id."""

    @abstractmethod
    def _fetch(self, doc_ids: list[str], with_vectors: bool) -> dict[str, Row]: ...

    @abstractmethod
    def _source_ids(self, sources: list[str], limit: int | None) -> list[str]:
        """Ids of the chunks of these sources, in stored order."""

    @abstractmethod
    def _nearest(self, vector: np.ndarray, top_k: int) -> list[tuple[StoredChunk, float]]:
        """(chunk, cosine) of the nearest chunks, best first."""

    @abstractmethod
    def _scan(self, batch_size: int, with_vectors: bool) -> Iterator[list[Row]]: ...

    @abstractmethod
    def _remove_all(self) -> None: ...

    @abstractmethod
    def _read_marker(self, writing: bool) -> str | None:
        """The stored change marker; ``writing``: also start the write (PostgreSQL locks the row)."""

    @abstractmethod
    def _write_marker(self, marker: str) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    # ---- change log ----------------------------------------------------------------------------
    def _snapshot(self) -> AbstractContextManager:
        """Reads inside it see one consistent state of the server (where it has snapshots)."""
        return nullcontext()

    @abstractmethod
    def _terms_after(self, position: int, batch_size: int) -> Iterator[list[tuple[str, dict[str, int]]]]:
        """(doc id, terms) of the rows stored after ``position`` (0: every row), in batches."""

    @abstractmethod
    def _deleted_after(self, position: int) -> list[tuple[str, dict[str, int] | None]] | None:
        """(id, its terms then) of each deletion after ``position``, oldest first; None when the log
        cannot tell (pruned, cleared, not begun). Terms may be None (logged before they were kept)."""

    @abstractmethod
    def _current_position(self) -> int | None:
        """The log position of everything this connection has seen (None: unknown)."""

    # ---- keeping up with other processes -----------------------------------------------
    def refresh(self, writing: bool = False) -> None:
        marker = self._read_marker(writing)
        if marker != self._marker or marker is None:
            with self._snapshot():
                deleted = None if self._position is None else self._deleted_after(self._position)
                if deleted is None:
                    self._rebuild_keywords()
                else:
                    self._catch_up(deleted)
                self._position = self._current_position()
            self._marker = marker
        # Writers of one store take turns (_read_marker(writing=True) locks): from here until this
        # block commits, nobody else writes, so the position after our own writes is known at save.
        self._current_under_lock = writing

    def _rebuild_keywords(self) -> None:
        self.full_rebuilds += 1
        self.keywords.clear()
        self._keys.clear()
        self._doc_ids.clear()
        for rows in self._terms_after(0, 5000):
            self.keyword_rows_read += len(rows)
            for doc_id, terms in rows:
                self._remember(doc_id, terms)

    def _catch_up(self, deleted: list[str]) -> None:
        """Apply other processes' changes since self._position. Rows stored after it are the current
        state of their ids (a replaced chunk gets a new seq), so deletions go first and the rows
        after: an id deleted and stored again since is among the rows and comes back."""
        for doc_id, terms in deleted:  # oldest first: the first deletion of an id is of the version we hold
            self._forget(doc_id, terms)
        for rows in self._terms_after(self._position, 5000):
            self.keyword_rows_read += len(rows)
            for doc_id, terms in rows:
                self._forget(doc_id)
                self._remember(doc_id, terms)

    def _remember(self, doc_id: str, terms: dict[str, int]) -> None:
        key = self._next_key
        self._next_key += 1
        self.keywords.add(key, terms)
        self._keys[doc_id] = key
        self._doc_ids[key] = doc_id

    def _forget(self, doc_id: str, terms: dict[str, int] | None = None) -> None:
        """Drop a chunk from the keyword index. Without its terms (or with wrong ones) the index finds
        them by scanning every term's postings: correct, but slow on a large vocabulary."""
        key = self._keys.pop(doc_id, None)
        if key is not None:
            del self._doc_ids[key]
            self.keywords.remove(key, terms)

    # ---- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count()

    def search(self, vector: np.ndarray, top_k: int, score_threshold: float = 1.0) -> list[ScoredChunk]:
        if top_k <= 0:
            return []
        hits = [ScoredChunk(chunk, similarity_to_score(cosine)) for chunk, cosine in self._nearest(vector, top_k)]
        return [hit for hit in hits if hit.score <= score_threshold]

    def keyword_search(self, query_terms: list[str], top_k: int) -> list[tuple[StoredChunk, float]]:
        hits = self.keywords.search(query_terms, top_k)
        rows = self._fetch([self._doc_ids[hit.key] for hit in hits], with_vectors=False)
        found = [(rows.get(self._doc_ids[hit.key]), hit.score) for hit in hits]
        return [(row[0], score) for row, score in found if row is not None]

    def keyword_scores(self, query_terms: list[str], doc_ids: list[str]) -> list[float]:
        return self.keywords.scores(query_terms, [self._keys.get(d, -1) for d in doc_ids])

    def similarities(self, vector: np.ndarray, doc_ids: list[str]) -> np.ndarray:
        rows = self._fetch(doc_ids, with_vectors=True)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        return np.array([float(rows[d][2] @ query) if d in rows else -1.0 for d in doc_ids], dtype=np.float32)

    def get(self, doc_ids: list[str]) -> list[StoredChunk]:
        rows = self._fetch(doc_ids, with_vectors=False)
        return [rows[d][0] for d in doc_ids if d in rows]

    def texts_and_vectors(self, sources: set[str], limit: int | None = None) -> tuple[list[str], np.ndarray]:
        doc_ids = self._source_ids(sorted(sources), limit)
        rows = self._fetch(doc_ids, with_vectors=True)
        found = [rows[d] for d in doc_ids if d in rows]
        if not found:
            return [], np.zeros((0, self.dimension), dtype=np.float32)
        return [row[0].page_content for row in found], np.stack([row[2] for row in found]).astype(np.float32)

    def ids_for_source(self, source: str) -> list[str]:
        return self._source_ids([source], None)

    def export(self, batch_size: int = 1000) -> Iterator[tuple[list[StoredChunk], np.ndarray]]:
        for rows in self._scan(batch_size, with_vectors=True):
            yield [row[0] for row in rows], np.stack([row[2] for row in rows]).astype(np.float32)

    # ---- writing -------------------------------------------------------------------------
    def add(self, chunks: list[StoredChunk], vectors: np.ndarray) -> list[str]:
        vectors = unit_rows(vectors, len(chunks), self.dimension)
        for chunk in chunks:
            chunk.doc_id = chunk.doc_id or str(uuid.uuid4())
        self.delete([chunk.doc_id for chunk in chunks])
        rows = [
            (chunk, dict(Counter(tokenize(chunk.page_content))), vector)
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        if rows:
            self._insert(rows)
            self.dirty = True
        for chunk, terms, _ in rows:
            self._remember(chunk.doc_id, terms)
        return [chunk.doc_id for chunk in chunks]

    def delete(self, doc_ids: list[str]) -> int:
        removed = self._delete(list(dict.fromkeys(doc_ids))) if doc_ids else {}
        if removed:
            self.dirty = True
        for doc_id, terms in removed.items():
            self._forget(doc_id, terms)
        return len(removed)

    def clear(self) -> None:
        self._remove_all()
        self.keywords.clear()
        self._keys.clear()
        self._doc_ids.clear()
        self.dirty = True

    def save(self, folder: Path) -> None:
        """Store a new change marker and commit: other processes catch their keyword index up."""
        if self.dirty:
            marker = uuid.uuid4().hex[:16]  # 64 random bits: Milvus keeps it with its counter in 64 characters
            self._write_marker(marker)
            # Only when this block began current under the lock does the position cover exactly the
            # index in memory; otherwise keep the old one (the next catch-up re-reads our rows: correct,
            # but each one already held is removed by a scan of the postings, having no logged terms).
            position = self._current_position() if self._current_under_lock else self._position
            self._commit()
            self._marker, self._position = marker, position
        else:
            self._commit()
        self.dirty = False
        self._current_under_lock = False
