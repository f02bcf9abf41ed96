"""The ingest cache: parsed documents and chunk vectors, content-addressed, shared by every process.

``get_ingest_cache()`` gives this process's handle on INGEST_CACHE_PATH (None when INGEST_CACHE_ENABLED is
off). Parsing looks up documents by the file's content hash and everything that changes how it is read
(parsed.py); embedding looks up vectors by the chunk text's hash and the model's fingerprint (vectors.py).
See docs/ingest_cache.md.
"""

from __future__ import annotations

import threading
from pathlib import Path

from server.knowledge_base.ingest_cache.store import IngestCache

__all__ = ["IngestCache", "cache_location", "get_ingest_cache", "open_cache"]

_caches: dict[tuple[str, int], IngestCache] = {}
_lock = threading.Lock()


def cache_location() -> tuple[str, int] | None:
    """(path, max bytes) of the cache from settings, or None when it is off; picklable for parse workers."""
    from configs import get_settings

    settings = get_settings()
    if not settings.INGEST_CACHE_ENABLED:
        return None
    return str(settings.ingest_cache_path), settings.INGEST_CACHE_MAX_BYTES


def open_cache(location: tuple[str, int] | None) -> IngestCache | None:
    """One handle per location per process (parse worker processes get theirs from the location)."""
    if location is None:
        return None
    with _lock:
        cache = _caches.get(location)
        if cache is None:
            cache = _caches[location] = IngestCache(Path(location[0]), location[1])
        return cache


def get_ingest_cache() -> IngestCache | None:
    return open_cache(cache_location())
