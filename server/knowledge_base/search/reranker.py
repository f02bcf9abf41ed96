"""The cross-encoder reranker (USE_RERANKER, RERANKER_MODEL, RERANKER_MAX_LENGTH).

A model is loaded once per process and shared by every request: Chatchat 0.2.10 loaded it again
for each question. Predictions take a lock, since one model object serves all request threads.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from configs import Settings, get_settings
from server.devices import resolve_device

logger = logging.getLogger(__name__)


class UnknownRerankerModel(ValueError):
    pass


class Reranker:
    def __init__(self, name: str, path: Path, max_length: int, device: str):
        from sentence_transformers import CrossEncoder

        self.name = name
        self.model = CrossEncoder(str(path), max_length=max_length, device=device, local_files_only=True)
        self._lock = threading.Lock()
        logger.info("reranker %s loaded from %s on %s", name, path, device)

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        """Relevance of each text to the query (higher is better)."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            return np.asarray(self.model.predict([(query, text) for text in texts], show_progress_bar=False))


_rerankers: dict[tuple[str, int], Reranker] = {}
_load_lock = threading.Lock()


def reranker_path(name: str, settings: Settings) -> Path:
    for candidate in (Path(name).expanduser(), settings.MODEL_ROOT_PATH / name):
        if candidate.is_absolute() and (candidate / "config.json").is_file():
            return candidate
    raise UnknownRerankerModel(
        f"reranker model '{name}' not found: set RERANKER_MODEL to a cross-encoder folder under "
        f"{settings.MODEL_ROOT_PATH} or to its path, or set USE_RERANKER to false"
    )


def get_reranker(settings: Settings | None = None) -> Reranker:
    settings = settings or get_settings()
    key = (settings.RERANKER_MODEL, settings.RERANKER_MAX_LENGTH)
    with _load_lock:
        reranker = _rerankers.get(key)
        if reranker is None:
            path = reranker_path(settings.RERANKER_MODEL, settings)
            device = resolve_device(settings.EMBEDDING_DEVICE)
            reranker = _rerankers[key] = Reranker(settings.RERANKER_MODEL, path, settings.RERANKER_MAX_LENGTH, device)
        return reranker
