"""Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, FastChat's gateway, Xinference, ...)."""

from __future__ import annotations

import httpx
import numpy as np

from configs import OnlineModelConfig
from server.knowledge_base.embeddings.base import EmbeddingBackend, normalize_rows


class OpenAICompatibleBackend(EmbeddingBackend):
    def __init__(self, name: str, config: OnlineModelConfig, batch_size: int = 64, timeout: float = 300.0):
        self.name = name
        self._config = config
        self._batch_size = batch_size
        self._client = httpx.Client(
            base_url=config.api_base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.api_key}"},
            timeout=timeout,
        )
        self.dimension = len(self._request(["dimension probe"])[0])

    def _request(self, texts: list[str]) -> list[list[float]]:
        response = self._client.post("/embeddings", json={"model": self._config.model_name, "input": texts})
        if response.status_code != 200:
            raise RuntimeError(
                f"embedding endpoint {self._config.api_base_url} answered {response.status_code}: {response.text[:300]}"
            )
        items = sorted(response.json()["data"], key=lambda item: item["index"])
        return [item["embedding"] for item in items]

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            rows.extend(self._request(texts[start : start + self._batch_size]))
        return normalize_rows(np.asarray(rows, dtype=np.float32))
