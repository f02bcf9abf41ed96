"""Temporary in-memory indexes for file chat (``upload_temp_docs`` + ``/chat/file_chat``).

Each upload gets an id; its chunks live in an in-memory FaissStore (with its keyword index), kept in an LRU of
CACHED_MEMO_VS_NUM entries and dropped when unused for MEMO_VS_TTL_SECONDS. Nothing is
written to the knowledge-base root: the uploaded files are parsed from a temp folder
that is removed right after.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from configs import get_settings
from server.knowledge_base.embeddings import get_embeddings
from server.knowledge_base.embeddings.fingerprint import vector_cache_namespace
from server.knowledge_base.ingest import ChunkingOptions, ParseTask, parse_files
from server.knowledge_base.ingest_cache import cache_location, open_cache
from server.knowledge_base.ingest_cache.vectors import VectorCache, embed_with_cache
from server.knowledge_base.paths import validate_file_name
from server.knowledge_base.search import SearchOptions, finish, prepare_query, rank_candidates
from server.knowledge_base.vector_stores.faiss_store import FaissStore, ScoredChunk, StoredChunk


class TempStoreNotFound(LookupError):
    """The id is unknown or expired; the client must upload the files again."""


@dataclass
class TempStore:
    store: FaissStore
    embed_model: str
    files: list[str] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TempStoreRegistry:
    def __init__(self, capacity: int, ttl_seconds: float):
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._stores: OrderedDict[str, TempStore] = OrderedDict()
        self._lock = threading.Lock()

    def add_files(
        self,
        files: list[tuple[str, bytes]],
        options: ChunkingOptions,
        prev_id: str | None = None,
        embed_model: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """Parse and index ``(file name, content)`` pairs; returns (id, {failed file: reason}).

        With ``prev_id`` the files are added to that upload's index (a new id is made if it expired).
        """
        embed_model = embed_model or get_settings().EMBEDDING_MODEL
        backend = get_embeddings(embed_model)
        temp_id = prev_id if prev_id and self._peek(prev_id) else uuid.uuid4().hex
        entry = self._peek(temp_id) or TempStore(FaissStore(backend.dimension), embed_model)
        failed: dict[str, str] = {}
        chunks: list[StoredChunk] = []
        folder = Path(tempfile.mkdtemp(prefix="file_chat_", dir=_temp_root()))
        try:
            tasks = []
            for name, content in files:
                try:
                    safe_name = validate_file_name(Path(name).name)
                except ValueError as exc:
                    failed[name] = str(exc)
                    continue
                path = folder / safe_name
                path.write_bytes(content)
                tasks.append(ParseTask(safe_name, str(path), options, cache=cache_location()))
            for parsed in parse_files(tasks, workers=1):
                if parsed.error:
                    failed[parsed.file_name] = parsed.error
                    continue
                entry.files.append(parsed.file_name)
                chunks += [StoredChunk(uuid.uuid4().hex, text, meta) for text, meta in parsed.chunks]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if chunks:
            vectors, _ = embed_with_cache(backend, [c.page_content for c in chunks], _vector_cache(backend))
            with entry.lock:
                entry.store.add(chunks, vectors)
        self._put(temp_id, entry)
        return temp_id, failed

    def search(
        self, temp_id: str, query: str, top_k: int, score_threshold: float, mode: str | None = None
    ) -> list[ScoredChunk]:
        entry = self._peek(temp_id)
        if entry is None:
            raise TempStoreNotFound(temp_id)
        options = SearchOptions.from_settings(mode)
        backend = get_embeddings(entry.embed_model)
        prepared = prepare_query(query, lambda text: backend.embed([text], is_query=True)[0])
        with entry.lock:
            ranked = rank_candidates(entry.store, prepared, top_k, score_threshold, options)
        self._put(temp_id, entry)
        return finish(prepared, ranked, top_k, options)

    def __contains__(self, temp_id: str) -> bool:
        return self._peek(temp_id) is not None

    def _peek(self, temp_id: str) -> TempStore | None:
        with self._lock:
            self._expire()
            return self._stores.get(temp_id)

    def _put(self, temp_id: str, entry: TempStore) -> None:
        with self._lock:
            entry.last_used = time.monotonic()
            self._stores[temp_id] = entry
            self._stores.move_to_end(temp_id)
            while len(self._stores) > self.capacity:
                self._stores.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._stores.items() if now - v.last_used > self.ttl_seconds]:
            del self._stores[key]


def _vector_cache(backend) -> VectorCache | None:
    """A file already ingested into a knowledge base (or chatted with before) needs no embedding again."""
    cache = open_cache(cache_location())
    return VectorCache(cache, vector_cache_namespace(backend), backend.dimension) if cache else None


def _temp_root() -> Path:
    root = get_settings().BASE_TEMP_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


@lru_cache(maxsize=1)
def get_temp_stores() -> TempStoreRegistry:
    settings = get_settings()
    return TempStoreRegistry(settings.CACHED_MEMO_VS_NUM, settings.MEMO_VS_TTL_SECONDS)
