"""Embedding alongside parsing, each distinct text once per run.

Ingestion has two heavy stages: reading files (OCR above all) and embedding their chunks. One
background thread loads the model while the first files are read, then embeds each parsed file
while the next ones are. With the model on a GPU the two stages use different hardware and overlap
fully; on a small CPU they compete for the same cores, and the gain is mostly the model load
(measured on 2 cores: parsing the OCR-heavy files last, to overlap more, made the whole run slower).

Real folders also repeat themselves: the same table exported as .csv and .xlsx, boilerplate headers
and footers, re-uploaded copies. A chunk whose text was already embedded in this run reuses that
vector (the model is deterministic); on Chatchat's own sample corpus that skips a quarter of the work.
Re-ingesting an edited file likewise reuses the stored vectors of its unchanged chunks. Across runs and
processes, the ingest cache (ingest_cache/vectors.py) answers texts embedded before with the same model.
"""

from __future__ import annotations

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


class BackgroundEmbedder:
    """A single embedding thread with a memory of what it embedded in this run.

    Only that thread touches the memory, so it needs no lock. ``on_embedded(n)`` is called from
    it after each model call (and for texts answered from memory).
    """

    # Enough to span a whole corpus of repeats; bounded so a million-chunk rebuild does not keep them all.
    MAX_REMEMBERED = 50_000

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
        self._vectors: dict[str, np.ndarray] = {}
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

    def _embed(self, texts: list[str]) -> np.ndarray:
        backend = self.backend
        if not texts:
            return np.zeros((0, backend.dimension), dtype=np.float32)
        started = time.perf_counter()
        found = {text: self._vectors[text] for text in texts if text in self._vectors}
        new_texts = [text for text in dict.fromkeys(texts) if text not in found]
        repeats = len(texts) - len(new_texts)
        new_texts = self._from_cache(new_texts, found)
        for start in range(0, len(new_texts), EMBED_CALL_TEXTS):
            batch = new_texts[start : start + EMBED_CALL_TEXTS]
            called = time.perf_counter()
            vectors = backend.embed(batch)
            self.model_seconds += time.perf_counter() - called
            found.update(zip(batch, vectors, strict=True))
            self._remember(batch, vectors)
            if self._vector_cache is not None:
                self._vector_cache.store(batch, vectors)
            self._report(len(batch))
        self.reused += repeats
        self._report(repeats)  # repeats count too, so a progress bar reaches its total
        self.seconds += time.perf_counter() - started
        return np.stack([found[text] for text in texts])

    def _from_cache(self, texts: list[str], found: dict[str, np.ndarray]) -> list[str]:
        """Fill ``found`` from the ingest cache; return the texts it did not have."""
        if self._cache is None or not texts:
            return texts
        if self._vector_cache is None:
            from server.knowledge_base.embeddings.fingerprint import vector_cache_namespace

            backend = self.backend
            self._vector_cache = VectorCache(self._cache, vector_cache_namespace(backend), backend.dimension)
        hits = self._vector_cache.lookup(texts)
        if hits:
            found.update(hits)
            self._remember(list(hits), np.stack(list(hits.values())))
            self.cached += len(hits)
            self._report(len(hits))
        return [text for text in texts if text not in hits]

    def _seed(self, known: Callable[[EmbeddingBackend], tuple[list[str], np.ndarray]]) -> None:
        try:
            self._remember(*known(self.backend))
        except Exception:  # only a shortcut: without it every chunk is simply embedded again
            logger.warning("could not reuse stored vectors; embedding every chunk again", exc_info=True)

    def _remember(self, texts: list[str], vectors: np.ndarray) -> None:
        self._vectors.update(zip(texts, np.asarray(vectors, dtype=np.float32), strict=True))
        while len(self._vectors) > self.MAX_REMEMBERED:
            del self._vectors[next(iter(self._vectors))]  # forget the oldest first

    def _report(self, count: int) -> None:
        if count and self._on_embedded:
            self._on_embedded(count)
