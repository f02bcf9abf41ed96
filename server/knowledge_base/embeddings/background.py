"""Embedding alongside parsing, each distinct text once per run.

Ingestion has two heavy stages: reading files (OCR above all) and embedding their chunks. One
background thread loads the model while the first files are read, then embeds each parsed file
while the next ones are. With the model on a GPU the two stages use different hardware and overlap
fully; on a small CPU they compete for the same cores, and the gain is mostly the model load
(measured on 2 cores: parsing the OCR-heavy files last, to overlap more, made the whole run slower).

Real folders also repeat themselves: the same table exported as .csv and .xlsx, boilerplate headers
and footers, re-uploaded copies. A chunk whose text was embedded recently in this run reuses that
vector (the model is deterministic); on Chatchat's own sample corpus that skips a quarter of the work.
That memory is one array of a fixed number of rows (16 MiB), keyed by text digests, so it does not
grow with the corpus (it used to hold up to 50,000 texts and vector objects: ~100 MB).
Re-ingesting an edited file likewise reuses the stored vectors of its unchanged chunks. Across runs and
processes, the ingest cache (ingest_cache/vectors.py) answers texts embedded before with the same model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from server.knowledge_base.embeddings.base import EmbeddingBackend
from server.knowledge_base.ingest_cache import IngestCache
from server.knowledge_base.ingest_cache.vectors import VectorCache

logger = logging.getLogger(__name__)

# Texts per model call: large enough to keep the model busy, small enough for a smooth progress bar.
EMBED_CALL_TEXTS = 256


class RecentVectors:
    """The vectors of the last texts embedded, in a fixed number of rows of one array.

    Keyed by a 16-byte digest of the text, not the text itself, so the texts can be freed once stored;
    a full memory overwrites its oldest row. The array grows as rows are used, up to ``capacity``, so a
    ten-chunk upload does not reserve room for fifty thousand.
    """

    def __init__(self, capacity: int, dimension: int):
        self.capacity, self.dimension = capacity, dimension
        self._rows = np.empty((min(capacity, 1024), dimension), dtype=np.float32)
        self._slots: dict[bytes, int] = {}
        self._keys: list[bytes] = []  # the key held by each used row, to forget it when the row is reused
        self._next = 0  # the row to write next once every row is used (the oldest)

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, text: str) -> np.ndarray | None:
        slot = self._slots.get(_digest(text))
        return None if slot is None else self._rows[slot]

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        start = max(0, len(texts) - self.capacity)  # of a batch larger than the memory, its newest rows
        for text, vector in zip(texts[start:], vectors[start:], strict=True):
            slot = self._slot_for(_digest(text))  # first: it may grow self._rows
            self._rows[slot] = vector

    def _slot_for(self, key: bytes) -> int:
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        if len(self._keys) < self.capacity:
            slot = len(self._keys)
            self._keys.append(key)
            if slot == len(self._rows):
                self._grow()
        else:
            slot, self._next = self._next, (self._next + 1) % self.capacity
            del self._slots[self._keys[slot]]
            self._keys[slot] = key
        self._slots[key] = slot
        return slot

    def _grow(self) -> None:
        rows = np.empty((min(self.capacity, 2 * len(self._rows)), self.dimension), dtype=np.float32)
        rows[: len(self._rows)] = self._rows
        self._rows = rows


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class BackgroundEmbedder:
    """A single embedding thread with a memory of what it embedded in this run.

    Only that thread touches the memory, so it needs no lock. ``on_embedded(n)`` is called from
    it after each model call (and for texts answered from memory).
    """

    # Enough to span a corpus's nearby repeats (an exported table's .csv and .xlsx, running headers); bounded
    # in count and bytes so memory does not grow with the corpus. Older repeats still come from the ingest
    # cache, without the model.
    MAX_REMEMBERED = 50_000
    MAX_REMEMBERED_BYTES = 16 * 2**20  # 10,922 vectors of 384 dimensions, 4,096 of 1,024

    @classmethod
    def capacity(cls, dimension: int) -> int:
        """How many vectors of this size the memory holds."""
        return min(cls.MAX_REMEMBERED, cls.MAX_REMEMBERED_BYTES // (4 * max(dimension, 1)))

    def __init__(
        self,
        load_backend: Callable[[], EmbeddingBackend],
        on_embedded: Callable[[int], None] | None = None,
        known: Callable[[EmbeddingBackend], tuple[list[str], np.ndarray]] | None = None,
        cache: IngestCache | None = None,
    ):
        """``known(backend)`` may give texts already embedded with this model (the stored chunks of
        files being re-ingested), so that an edited file re-embeds only the chunks that changed; ``cache``
        answers texts embedded in earlier runs and keeps the new ones."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._backend = self._pool.submit(load_backend)  # loads while the first files are parsed
        self._on_embedded = on_embedded
        self._memory: RecentVectors | None = None  # made in the embedding thread, once the dimension is known
        self.seconds = 0.0  # spent embedding, model load excluded
        self.model_seconds = 0.0  # of which in the model itself (the rest: cache look-ups and writes)
        self.reused = 0  # chunks answered from memory instead of the model
        self.cached = 0  # chunks answered from the ingest cache
        self._cache = cache
        self._vector_cache: VectorCache | None = None
        if known is not None:
            self._pool.submit(self._seed, known)

    @property
    def backend(self) -> EmbeddingBackend:
        return self._backend.result()

    def submit(self, texts: list[str]) -> Future:
        """Vectors for ``texts``, in order, as a Future of an array of shape (len(texts), dimension)."""
        return self._pool.submit(self._embed, texts)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackgroundEmbedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def memory(self) -> RecentVectors:
        if self._memory is None:
            dimension = self.backend.dimension
            self._memory = RecentVectors(self.capacity(dimension), dimension)
        return self._memory

    def _embed(self, texts: list[str]) -> np.ndarray:
        backend = self.backend
        vectors = np.empty((len(texts), backend.dimension), dtype=np.float32)
        if not texts:
            return vectors
        started = time.perf_counter()
        rows: dict[str, list[int]] = {}  # each distinct text's rows in ``vectors``
        for row, text in enumerate(texts):
            rows.setdefault(text, []).append(row)
        new_texts = []
        for text, places in rows.items():
            remembered = self.memory.get(text)
            if remembered is None:
                new_texts.append(text)
            else:
                vectors[places] = remembered
        repeats = len(texts) - len(new_texts)
        new_texts = self._from_cache(new_texts, vectors, rows)
        for start in range(0, len(new_texts), EMBED_CALL_TEXTS):
            batch = new_texts[start : start + EMBED_CALL_TEXTS]
            called = time.perf_counter()
            embedded = backend.embed(batch)
            self.model_seconds += time.perf_counter() - called
            for text, vector in zip(batch, embedded, strict=True):
                vectors[rows[text]] = vector
            self.memory.add(batch, embedded)
            if self._vector_cache is not None:
                self._vector_cache.store(batch, embedded)
            self._report(len(batch))
        self.reused += repeats
        self._report(repeats)  # repeats count too, so a progress bar reaches its total
        self.seconds += time.perf_counter() - started
        return vectors

    def _from_cache(self, texts: list[str], vectors: np.ndarray, rows: dict[str, list[int]]) -> list[str]:
        """Fill the rows of the texts the ingest cache has; return the texts it did not have."""
        if self._cache is None or not texts:
            return texts
        if self._vector_cache is None:
            from server.knowledge_base.embeddings.fingerprint import vector_cache_namespace

            backend = self.backend
            self._vector_cache = VectorCache(self._cache, vector_cache_namespace(backend), backend.dimension)
        hits = self._vector_cache.lookup(texts)
        if hits:
            for text, vector in hits.items():
                vectors[rows[text]] = vector
            self.memory.add(list(hits), np.stack(list(hits.values())))
            self.cached += len(hits)
            self._report(len(hits))
        return [text for text in texts if text not in hits]

    def _seed(self, known: Callable[[EmbeddingBackend], tuple[list[str], np.ndarray]]) -> None:
        try:
            texts, vectors = known(self.backend)
            self.memory.add(texts, vectors)
        except Exception:  # only a shortcut: without it every chunk is simply embedded again
            logger.warning("could not reuse stored vectors; embedding every chunk again", exc_info=True)

    def _report(self, count: int) -> None:
        if count and self._on_embedded:
            self._on_embedded(count)
