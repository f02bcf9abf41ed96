"""Chunk vectors in the ingest cache, keyed by the chunk text's hash and the embedding model's fingerprint.

A vector is stored as its raw float32 bytes. The key covers the model's weights and dtype
(embeddings.fingerprint.vector_cache_namespace), so a changed model, or the same model at another
precision, never gets another's vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from server.knowledge_base.embeddings.base import EmbeddingBackend
from server.knowledge_base.ingest_cache.store import IngestCache


def vector_key(namespace: str, text: str) -> str:
    return "vec:" + hashlib.sha256(f"{namespace}\0{text}".encode()).hexdigest()


class VectorCache:
    """The vectors of one model in the ingest cache."""

    def __init__(self, cache: IngestCache, namespace: str, dimension: int):
        self.cache, self.namespace, self.dimension = cache, namespace, dimension

    def lookup(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Vectors of the texts the cache has; a value of the wrong size is dropped (and re-embedded)."""
        keys = {vector_key(self.namespace, text): text for text in dict.fromkeys(texts)}
        found, bad = {}, []
        for key, raw in self.cache.get_many(list(keys)).items():
            vector = np.frombuffer(raw, dtype=np.float32)
            if vector.shape == (self.dimension,) and np.isfinite(vector).all():
                found[keys[key]] = vector
            else:
                bad.append(key)
        self.cache.discard(bad)
        return found

    def store(self, texts: list[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        self.cache.put_many(
            {vector_key(self.namespace, text): vector.tobytes() for text, vector in zip(texts, vectors, strict=True)}
        )


def embed_with_cache(
    backend: EmbeddingBackend,
    texts: list[str],
    cache: VectorCache | None,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` in order, embedding only what the cache lacks; returns (vectors, cache hits)."""
    embed = embed or backend.embed
    if not texts:
        return np.zeros((0, backend.dimension), dtype=np.float32), 0
    found = cache.lookup(texts) if cache is not None else {}
    missing = [text for text in dict.fromkeys(texts) if text not in found]
    if missing:
        vectors = embed(missing)
        found.update(zip(missing, vectors, strict=True))
        if cache is not None:
            cache.store(missing, vectors)
    hits = sum(1 for text in texts if text not in missing)
    return np.stack([found[text] for text in texts]).astype(np.float32, copy=False), hits
