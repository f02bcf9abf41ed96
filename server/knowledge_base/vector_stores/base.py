"""What every vector store offers the knowledge-base service, search, summaries and migration.

A store holds chunks (id, text, metadata with the ``source`` file) with one unit vector each, and a
keyword (BM25) index over the same chunks. Scores keep Chatchat's meaning in every store:
score = (1 - cosine) / 2, 0 identical, 1 opposite; a hit is kept when score <= score_threshold.

Two kinds of store implement it:
* local (FAISS): the FAISS and keyword indexes live in memory, the chunks in a SQLite database in the
  store's folder; ``save`` commits the changes since the last one (see faiss_store);
* remote (Milvus, PostgreSQL/pgvector): every change goes to the server; ``save`` makes the changes
  of one write block durable (PostgreSQL commits its transaction) and ``discard`` drops them.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class StoredChunk:
    doc_id: str
    page_content: str
    metadata: dict = field(default_factory=dict)


@dataclass
class ScoredChunk:
    chunk: StoredChunk
    score: float
    details: dict = field(default_factory=dict)  # why it was found (search mode, each side's score and rank)


class StoreCorrupted(RuntimeError):
    pass


class StoreUnavailable(RuntimeError):
    """The store's server cannot be reached, or failed during a request. One line, no secrets."""


class StoreSettingsError(ValueError):
    """A vector store setting (KBS_CONFIG) is missing or wrong. One line, no secrets."""


class StoreSaveFailed(OSError):
    """A save could not be written (disk full, no permission): the last commit stays the current state.

    Its text names the cause without server paths, so it can be shown to a client as it is."""

    def __init__(self, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        reason = cause.strerror or type(cause).__name__
        self.disk_full = cause.errno in (errno.ENOSPC, errno.EDQUOT)
        if self.disk_full:
            self.message = f"disk full while saving the vector store ({reason})"
        else:
            self.message = f"could not save the vector store ({reason})"

    def __str__(self) -> str:
        return self.message


def similarity_to_score(similarity: float) -> float:
    return float(min(1.0, max(0.0, (1.0 - similarity) / 2.0)))


class VectorStore(ABC):
    """The operations the service, search/, summary.py, the cache and migration use."""

    dimension: int
    dirty: bool = False  # changed since the last save
    generation: int = 0  # the last commit (seq) this store has seen (local stores)
    remote: bool = False  # True: the data lives on a server, nothing to load or save as files

    # ---- reading -------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def search(self, vector: np.ndarray, top_k: int, score_threshold: float = 1.0) -> list[ScoredChunk]:
        """The nearest chunks by cosine, best first, those with score <= score_threshold."""

    @abstractmethod
    def keyword_search(self, query_terms: list[str], top_k: int) -> list[tuple[StoredChunk, float]]:
        """The chunks with the best BM25 score for the query terms, best first."""

    @abstractmethod
    def keyword_scores(self, query_terms: list[str], doc_ids: list[str]) -> list[float]:
        """The BM25 score of each chunk for the query terms (0.0 when it shares none)."""

    @abstractmethod
    def similarities(self, vector: np.ndarray, doc_ids: list[str]) -> np.ndarray:
        """Cosine similarity of the query vector to each of these stored chunks."""

    @abstractmethod
    def get(self, doc_ids: list[str]) -> list[StoredChunk]:
        """The chunks with these ids, in the order given; unknown ids are skipped."""

    @abstractmethod
    def texts_and_vectors(self, sources: set[str], limit: int | None = None) -> tuple[list[str], np.ndarray]:
        """The stored text and vector of the chunks whose source is one of ``sources`` (at most ``limit``)."""

    @abstractmethod
    def ids_for_source(self, source: str) -> list[str]:
        """The ids of one source file's chunks, in stored order."""

    @abstractmethod
    def export(self, batch_size: int = 1000) -> Iterator[tuple[list[StoredChunk], np.ndarray]]:
        """Every chunk with its vector, in batches (migration between stores)."""

    def sources(self) -> dict[str, list[str]]:
        """Every source file's chunk ids (check/repair); FAISS asks its SQLite database, others scan."""
        found: dict[str, list[str]] = {}
        for chunks, _vectors in self.export():
            for chunk in chunks:
                found.setdefault(chunk.metadata.get("source"), []).append(chunk.doc_id)
        return found

    def stale_keyword_ids(self) -> list[str]:
        """Chunks whose keyword terms differ from their text. Remote stores rebuild their in-memory keyword
        index from the server's stored terms on every change, so there is nothing stale to find there."""
        return []

    def reindex_keywords(self, doc_ids: list[str]) -> None:
        """Make these chunks' keyword terms again from their stored text (see stale_keyword_ids)."""
        return None

    # ---- writing -------------------------------------------------------------------
    @abstractmethod
    def add(self, chunks: list[StoredChunk], vectors: np.ndarray) -> list[str]:
        """Store chunks (a chunk without an id gets one; one with a known id replaces it); returns the ids."""

    @abstractmethod
    def delete(self, doc_ids: list[str]) -> int:
        """Remove these chunks; returns how many were there."""

    def update_text(self, doc_id: str, page_content: str, metadata: dict, vector: np.ndarray) -> None:
        self.delete([doc_id])
        self.add([StoredChunk(doc_id, page_content, metadata)], np.asarray(vector).reshape(1, -1))

    @abstractmethod
    def clear(self) -> None: ...

    # ---- lifetime ------------------------------------------------------------------
    @abstractmethod
    def save(self, folder: Path) -> None:
        """Make the changes so far durable (FAISS: a SQLite commit in ``folder``; servers: their commit)."""

    def refresh(self, writing: bool = False) -> None:
        """Catch up with changes other processes made (FAISS: the rows they committed since this store's own)."""
        return None

    def discard(self) -> None:
        """Drop unsaved changes and release connections; the store is not used afterwards."""
        return None

    def finish_rebuild(self) -> bool:
        """After a rebuild (clear, then the whole corpus added): make now what every later load would
        otherwise make again; True when the store changed and should be saved."""
        return False

    def drop(self) -> None:
        """Delete the store's data on its server (remote stores); local stores are deleted with their folder."""
        return None


def unit_rows(vectors: np.ndarray, count: int, dimension: int) -> np.ndarray:
    """``vectors`` as a contiguous float32 array of shape (count, dimension), or a clear ValueError."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.shape != (count, dimension):
        raise ValueError(f"expected vectors of shape ({count}, {dimension}), got {vectors.shape}")
    return vectors
