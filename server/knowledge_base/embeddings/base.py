"""The one interface every embedding backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class EmbeddingBackend(ABC):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    dimension: int

    @abstractmethod
    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        """Return an array of shape (len(texts), dimension), rows of unit length."""

    # LangChain's Embeddings protocol, so backends plug into LangChain code too.
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text], is_query=True)[0].tolist()


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
