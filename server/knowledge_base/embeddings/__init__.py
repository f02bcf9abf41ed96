"""Embedding backends behind one interface, chosen by model name.

``get_embeddings(name)`` returns a cached backend: an OpenAI-compatible endpoint when the
name is configured in ONLINE_EMBEDDING_MODELS, else a local sentence-transformers model.
"""

from __future__ import annotations

import threading
from pathlib import Path

from configs import Settings, get_settings
from server.knowledge_base.embeddings.base import EmbeddingBackend, normalize_rows
from server.knowledge_base.embeddings.local import SentenceTransformerBackend, resolve_model_path

__all__ = [
    "EmbeddingBackend",
    "UnknownEmbeddingModel",
    "check_embedding_model",
    "get_embeddings",
    "list_embedding_models",
    "normalize_rows",
]


# Texts per request to an OpenAI-compatible embeddings endpoint when EMBEDDING_BATCH_SIZE is unset.
ONLINE_BATCH_SIZE = 64


class UnknownEmbeddingModel(ValueError):
    pass


# By name and, for local models, the folder it resolves to now: weights load lazily, so a backend made
# for a folder that has since moved (settings changed in a long-lived process) must not be reused.
_backends: dict[tuple[str, str], EmbeddingBackend] = {}
_lock = threading.Lock()


def list_embedding_models(settings: Settings | None = None) -> list[str]:
    """Names that get_embeddings can serve on this machine."""
    settings = settings or get_settings()
    names = {settings.EMBEDDING_MODEL, *settings.EMBEDDING_MODEL_PATHS, *settings.ONLINE_EMBEDDING_MODELS}
    if settings.MODEL_ROOT_PATH.is_dir():
        names.update(p.name for p in settings.MODEL_ROOT_PATH.iterdir() if (p / "modules.json").is_file())
    return sorted(n for n in names if n in settings.ONLINE_EMBEDDING_MODELS or resolve_model_path(n, settings))


def get_embeddings(name: str | None = None, settings: Settings | None = None) -> EmbeddingBackend:
    settings = settings or get_settings()
    name = name or settings.EMBEDDING_MODEL
    where = "online" if name in settings.ONLINE_EMBEDDING_MODELS else str(resolve_model_path(name, settings))
    with _lock:
        backend = _backends.get((name, where))
        if backend is None:
            backend = _create_backend(name, settings)
            _backends[(name, where)] = backend
        return backend


def forget_embeddings(name: str) -> None:
    """Drop the backends made for ``name`` (as a restart would); the next get_embeddings makes a new one."""
    with _lock:
        for key in [key for key in _backends if key[0] == name]:
            del _backends[key]


def check_embedding_model(name: str | None = None, settings: Settings | None = None) -> None:
    """Raise UnknownEmbeddingModel now, without loading anything, if get_embeddings(name) would."""
    settings = settings or get_settings()
    name = name or settings.EMBEDDING_MODEL
    if name not in settings.ONLINE_EMBEDDING_MODELS:
        _local_model_path(name, settings)


def _local_model_path(name: str, settings: Settings) -> Path:
    path = resolve_model_path(name, settings)
    if path is None:
        raise UnknownEmbeddingModel(
            f"embedding model '{name}' not found: put its folder at {settings.MODEL_ROOT_PATH / name}, "
            "name its folder in EMBEDDING_MODEL_PATHS, or configure it in ONLINE_EMBEDDING_MODELS"
        )
    return path


def _create_backend(name: str, settings: Settings) -> EmbeddingBackend:
    if name in settings.ONLINE_EMBEDDING_MODELS:
        from server.knowledge_base.embeddings.online import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            name,
            settings.ONLINE_EMBEDDING_MODELS[name],
            settings.EMBEDDING_BATCH_SIZE or ONLINE_BATCH_SIZE,
            settings.HTTPX_DEFAULT_TIMEOUT,
        )
    path = _local_model_path(name, settings)
    return SentenceTransformerBackend(
        name, path, settings.EMBEDDING_DEVICE, settings.EMBEDDING_BATCH_SIZE, settings.EMBEDDING_DTYPE
    )
