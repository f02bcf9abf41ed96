"""Temporary indexes for file chat (``upload_temp_docs`` + ``/chat/file_chat``), shared by every API process.

Each upload gets an id (32 hex digits, made here; anything else is refused as unknown, so a client's id never
becomes a path). Its chunks go into a FaissStore (with its keyword index) saved under TEMP_STORES_PATH
(default KB_ROOT_PATH/.temp_stores), so any API process that sees that folder (the same host, or a shared file
system) answers a file chat on an id another process handed out. One folder per id::

    <id>/meta.json     {"version", "embed_model", "files"}: replaced atomically; its mtime is the last use
    <id>/<version>/    the store as FaissStore.save wrote it; every change saves a new version, then drops the old
    <id>/.lock         serialises appends to one id (a file lock: processes of one host; with the metadata in
                       PostgreSQL, an advisory lock there instead, which holds across hosts: locks.py)

Readers load the version meta.json names, so a reader never sees half of an append. Each process keeps the
CACHED_MEMO_VS_NUM ids it used last in memory and reloads one when its version changed. An id unused for
MEMO_VS_TTL_SECONDS (meta.json's mtime, touched on each use by any process) is removed by the next process
that sweeps. The uploaded files themselves are parsed from a temp folder under BASE_TEMP_DIR, removed right
after.
"""

from __future__ import annotations

import json
import os
import re
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
from server.knowledge_base.locks import temp_store_lock
from server.knowledge_base.paths import validate_file_name
from server.knowledge_base.search import SearchOptions, finish, prepare_query, rank_candidates
from server.knowledge_base.vector_stores import StoreCorrupted
from server.knowledge_base.vector_stores.faiss_store import FaissStore, ScoredChunk, StoredChunk

TEMP_ID = re.compile(r"[0-9a-f]{32}")
META_FILE = "meta.json"
LOCK_FILE = ".lock"
LOAD_ATTEMPTS = 3  # a version can be replaced (and removed) between reading meta.json and loading it


class TempStoreNotFound(LookupError):
    """The id is unknown or expired; the client must upload the files again."""


@dataclass
class TempStore:
    store: FaissStore
    embed_model: str
    files: list[str] = field(default_factory=list)
    version: str = ""  # the saved version this copy in memory is
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TempStoreRegistry:
    def __init__(self, capacity: int, ttl_seconds: float, root: Path | None = None):
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.root = root or temp_stores_root()
        self._stores: OrderedDict[str, TempStore] = OrderedDict()
        self._lock = threading.Lock()
        self._swept_at = 0.0

    def add_files(
        self,
        files: list[tuple[str, bytes]],
        options: ChunkingOptions,
        prev_id: str | None = None,
        embed_model: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """Parse and index ``(file name, content)`` pairs; returns (id, {failed file: reason}).

        With ``prev_id`` the files are added to that upload's index (a new id is made if it expired or is
        not one of ours)."""
        self._sweep()
        previous = self._read_meta(prev_id) if prev_id else None
        temp_id = prev_id if previous else uuid.uuid4().hex
        embed_model = previous["embed_model"] if previous else embed_model or get_settings().EMBEDDING_MODEL
        backend = get_embeddings(embed_model)
        chunks, names, failed = _parse(files, options)
        vectors = None
        if chunks:
            vectors, _ = embed_with_cache(backend, [c.page_content for c in chunks], _vector_cache(backend))
        folder = self.root / temp_id
        folder.mkdir(parents=True, exist_ok=True)
        with temp_store_lock(temp_id, folder / LOCK_FILE):
            try:
                entry = self._open(temp_id)
            except TempStoreNotFound:  # a new id, or one that expired meanwhile: it starts empty
                entry = TempStore(FaissStore(backend.dimension), embed_model)
            try:
                with entry.lock:
                    if chunks:
                        entry.store.add(chunks, vectors)
                    entry.files += names
                    entry.version = self._save(folder, entry)
            except BaseException:
                self._forget(temp_id)  # memory may hold what the disk does not
                raise
        self._put(temp_id, entry)
        return temp_id, failed

    def search(
        self, temp_id: str, query: str, top_k: int, score_threshold: float, mode: str | None = None
    ) -> list[ScoredChunk]:
        self._sweep()
        entry = self._open(temp_id)
        options = SearchOptions.from_settings(mode)
        backend = get_embeddings(entry.embed_model)
        prepared = prepare_query(query, lambda text: backend.embed([text], is_query=True)[0])
        with entry.lock:
            ranked = rank_candidates(entry.store, prepared, top_k, score_threshold, options)
        return finish(prepared, ranked, top_k, options)

    def __contains__(self, temp_id: str) -> bool:
        return self._read_meta(temp_id) is not None

    # ---- disk ----------------------------------------------------------------------------------
    def _read_meta(self, temp_id: str) -> dict | None:
        """The id's meta.json, or None when the id is not one of ours, unknown or expired."""
        if not isinstance(temp_id, str) or not TEMP_ID.fullmatch(temp_id):
            return None
        try:
            return json.loads((self.root / temp_id / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _open(self, temp_id: str) -> TempStore:
        """The id's store, from memory when that copy is the saved version, else loaded; marks it used."""
        for _ in range(LOAD_ATTEMPTS):
            meta = self._read_meta(temp_id)
            if meta is None:
                self._forget(temp_id)
                raise TempStoreNotFound(temp_id)
            with self._lock:
                cached = self._stores.get(temp_id)
            if cached is not None and cached.version == meta["version"]:
                entry = cached
                break
            try:
                store = FaissStore.load(self.root / temp_id / meta["version"])
            except (FileNotFoundError, StoreCorrupted):
                continue  # replaced by an append meanwhile: read meta.json again
            entry = TempStore(store, meta["embed_model"], list(meta["files"]), meta["version"])
            break
        else:
            raise TempStoreNotFound(temp_id)
        _touch(self.root / temp_id / META_FILE)
        self._put(temp_id, entry)
        return entry

    def _save(self, folder: Path, entry: TempStore) -> str:
        """Save ``entry`` as a new version, make it the current one, and remove the others; the version."""
        version = uuid.uuid4().hex
        entry.store.save(folder / version)
        meta = {"version": version, "embed_model": entry.embed_model, "files": entry.files}
        staged = folder / f".{META_FILE}.{version}"
        staged.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        os.replace(staged, folder / META_FILE)
        for old in folder.iterdir():
            if old.is_dir() and old.name != version:
                shutil.rmtree(old, ignore_errors=True)
        return version

    def _sweep(self) -> None:
        """Remove ids unused for the TTL, from memory and (for every process) from disk; at most every
        tenth of the TTL, so a busy server does not list the folder on each request."""
        now = time.monotonic()
        if now - self._swept_at < min(60.0, self.ttl_seconds / 10):
            return
        self._swept_at = now
        with self._lock:
            for key in [k for k, v in self._stores.items() if now - v.last_used > self.ttl_seconds]:
                del self._stores[key]
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if TEMP_ID.fullmatch(folder.name) and _idle_seconds(folder) > self.ttl_seconds:
                _remove(folder)
            elif folder.name.startswith(".expired-"):  # a process stopped half-way through removing it
                shutil.rmtree(folder, ignore_errors=True)

    # ---- memory --------------------------------------------------------------------------------
    def _put(self, temp_id: str, entry: TempStore) -> None:
        with self._lock:
            entry.last_used = time.monotonic()
            self._stores[temp_id] = entry
            self._stores.move_to_end(temp_id)
            while len(self._stores) > self.capacity:
                self._stores.popitem(last=False)

    def _forget(self, temp_id: str) -> None:
        with self._lock:
            self._stores.pop(temp_id, None)


def _parse(files: list[tuple[str, bytes]], options: ChunkingOptions) -> tuple[list[StoredChunk], list[str], dict]:
    """Chunks of the files, the names of those parsed, and {failed file: reason}."""
    failed: dict[str, str] = {}
    chunks: list[StoredChunk] = []
    names: list[str] = []
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
            names.append(parsed.file_name)
            chunks += [StoredChunk(uuid.uuid4().hex, text, meta) for text, meta in parsed.chunks]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return chunks, names, failed


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # removed meanwhile: this use still answers from the copy loaded


def _idle_seconds(folder: Path) -> float:
    """Seconds since the id was last used (its meta.json's mtime; the folder's while it has none yet)."""
    try:
        mtime = (folder / META_FILE).stat().st_mtime
    except OSError:
        try:
            mtime = folder.stat().st_mtime
        except OSError:
            return 0.0
    return time.time() - mtime


def _remove(folder: Path) -> None:
    """Remove an id's folder in one step for readers: renamed away first, then deleted."""
    doomed = folder.with_name(f".expired-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, doomed)
    except OSError:
        return  # another process removed it first
    shutil.rmtree(doomed, ignore_errors=True)


def _vector_cache(backend) -> VectorCache | None:
    """A file already ingested into a knowledge base (or chatted with before) needs no embedding again."""
    cache = open_cache(cache_location())
    return VectorCache(cache, vector_cache_namespace(backend), backend.dimension) if cache else None


def _temp_root() -> Path:
    root = get_settings().BASE_TEMP_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def temp_stores_root() -> Path:
    settings = get_settings()
    return settings.TEMP_STORES_PATH or settings.KB_ROOT_PATH / ".temp_stores"


@lru_cache(maxsize=1)
def get_temp_stores() -> TempStoreRegistry:
    settings = get_settings()
    return TempStoreRegistry(settings.CACHED_MEMO_VS_NUM, settings.MEMO_VS_TTL_SECONDS)
