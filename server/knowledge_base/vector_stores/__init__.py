"""Vector stores: FAISS on local disk (DEFAULT_VS_TYPE "faiss") and its process-wide cache."""

from functools import lru_cache

from configs import get_settings
from server.knowledge_base.vector_stores.cache import VectorStoreCache
from server.knowledge_base.vector_stores.faiss_store import FaissStore, ScoredChunk, StoreCorrupted, StoredChunk

SUPPORTED_VS_TYPES = ("faiss",)


@lru_cache(maxsize=1)
def get_store_cache() -> VectorStoreCache:
    """The process-wide cache (tests call get_store_cache.cache_clear() after changing settings)."""
    return VectorStoreCache(get_settings().CACHED_VS_NUM)


__all__ = [
    "SUPPORTED_VS_TYPES",
    "FaissStore",
    "ScoredChunk",
    "StoreCorrupted",
    "StoredChunk",
    "VectorStoreCache",
    "get_store_cache",
]
