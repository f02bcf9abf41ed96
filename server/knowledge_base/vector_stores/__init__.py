"""Vector stores (Chatchat's vs_type): FAISS on local disk, Milvus/Zilliz and PostgreSQL/pgvector on a
server, behind one interface (base.VectorStore), and the process-wide cache that hands them out."""

import hashlib
from functools import lru_cache
from pathlib import Path

from configs import get_settings
from server.knowledge_base.vector_stores.base import (
    ScoredChunk,
    StoreCorrupted,
    StoredChunk,
    StoreSettingsError,
    StoreUnavailable,
    VectorStore,
)
from server.knowledge_base.vector_stores.cache import VectorStoreCache
from server.knowledge_base.vector_stores.faiss_store import FaissStore, read_generation

SUPPORTED_VS_TYPES = ("faiss", "milvus", "zilliz", "pg")
REMOTE_VS_TYPES = ("milvus", "zilliz", "pg")


def store_name(key: tuple[str, str]) -> str:
    """The table or collection name of a store on a server: knowledge-base names may be any Unicode,
    server names may not, so the name is a hash of (knowledge base, embedding model or summary folder)."""
    digest = hashlib.blake2b("\0".join(key).encode("utf-8"), digest_size=12).hexdigest()
    return f"chatkb_{digest}"


def open_remote_store(vs_type: str, key: tuple[str, str], folder: Path, dimension: int) -> VectorStore:
    """Connect to the store of ``key`` on the server KBS_CONFIG names for ``vs_type`` (creating it if new)."""
    config = get_settings().KBS_CONFIG
    if vs_type in ("milvus", "zilliz"):
        from server.knowledge_base.vector_stores.milvus_store import MilvusStore

        return MilvusStore(dimension, getattr(config, vs_type), folder, store_name(key), vs_type)
    if vs_type == "pg":
        from server.knowledge_base.vector_stores.pg_store import PgStore

        return PgStore(dimension, config.pg.connection_uri, store_name(key), config.pg)
    raise StoreSettingsError(f"unsupported vector store type '{vs_type}' (supported: {', '.join(SUPPORTED_VS_TYPES)})")


def open_store(vs_type: str, key: tuple[str, str], folder: Path, dimension: int) -> VectorStore:
    """A store outside the cache (migration): FAISS loaded from its folder (empty when none was saved)."""
    if vs_type != "faiss":
        return open_remote_store(vs_type, key, folder, dimension)
    if read_generation(folder) == 0:
        return FaissStore(dimension)
    return FaissStore.load(folder)


@lru_cache(maxsize=1)
def get_store_cache() -> VectorStoreCache:
    """The process-wide cache (tests call get_store_cache.cache_clear() after changing settings)."""
    return VectorStoreCache(get_settings().CACHED_VS_NUM, open_remote_store)


__all__ = [
    "REMOTE_VS_TYPES",
    "SUPPORTED_VS_TYPES",
    "FaissStore",
    "ScoredChunk",
    "StoreCorrupted",
    "StoreSettingsError",
    "StoreUnavailable",
    "StoredChunk",
    "VectorStore",
    "VectorStoreCache",
    "get_store_cache",
    "open_remote_store",
    "open_store",
    "store_name",
]
