"""In-memory cache of vector stores with per-store locking, safe across threads and processes.

* An LRU of at most ``capacity`` stores; a store with unsaved changes is saved when evicted.
* One lock per store: readers and writers of one store take turns, other stores go on.
* Writers also hold a file lock in the store's folder, and every access first checks the
  FAISS store's CURRENT file (a stat-sized read): when another process (init_database.py while
  the API server runs) committed since, the store catches up from its SQLite database, reading
  only the rows and tombstones newer than its own (``refresh``), so neither process loses the
  other's work and nobody reloads a whole store for a small change. A store whose database file
  was replaced (its knowledge base deleted and made again) is loaded afresh.
* A failed load leaves no half-made entry behind: the next caller simply tries again.
* A failed save (disk full) leaves in memory what is on disk: a writer's changes are dropped
  with the store, which the next use reloads, so chunks the database never recorded are neither
  searchable nor saved later. A store evicted with unsaved changes stays cached until it saves.
* Stores on a server (Milvus, PostgreSQL) are opened once and asked to catch up (``refresh``)
  before each use; every write block ends with their ``save`` (PostgreSQL's commit), and a failure
  drops the connection with the block's uncommitted changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from server.knowledge_base.vector_stores.base import StoreUnavailable, VectorStore
from server.knowledge_base.vector_stores.faiss_store import FaissStore, StoreSaveFailed, read_generation

LOCK_FILE = ".lock"
logger = logging.getLogger(__name__)


# (vs_type, key, folder, dimension) -> a store on a server
RemoteOpener = Callable[[str, tuple[str, str], Path, int], VectorStore]


class StoreHandle:
    def __init__(
        self,
        folder: Path,
        dimension: int,
        vs_type: str = "faiss",
        key: tuple[str, str] = ("", ""),
        open_remote: RemoteOpener | None = None,
    ):
        self.folder = folder
        self.dimension = dimension
        self.vs_type, self.key, self.open_remote = vs_type, key, open_remote
        self.lock = threading.RLock()
        self.store: VectorStore | None = None

    def _ensure_current(self, writing: bool = False) -> VectorStore:
        """Load the store, or reload it if another process saved a newer generation."""
        if self.vs_type != "faiss":
            if self.store is not None:
                try:
                    self.store.refresh(writing)
                    return self.store
                except StoreUnavailable:  # its connection broke since the last use (server restarted)
                    self.drop_store()  # connect again, once
            self.store = self.open_remote(self.vs_type, self.key, self.folder, self.dimension)
            self.store.refresh(writing)
            return self.store
        on_disk = read_generation(self.folder)
        store = self.store
        if isinstance(store, FaissStore) and store.folder is not None:
            if not store.replaced_on_disk():
                if on_disk > store.generation and not store.dirty:
                    store.refresh(writing)
                return store
        elif store is not None and (on_disk <= store.generation or store.dirty):
            return store  # made in memory and not saved yet
        if store is not None:
            store.discard()  # its database file was deleted (perhaps made again), or another process saved first
        self.store = _load_or_new(self.folder, self.dimension, on_disk)
        return self.store

    def save(self) -> None:
        if not self.folder.is_dir():  # its knowledge base was deleted: saving would bring the folder back
            return
        with self.lock, FileLock(str(self.folder / LOCK_FILE)):
            if self.store is not None and self.store.dirty:
                self.store.save(self.folder)

    def drop_store(self) -> None:
        """Forget the store in memory (a server store also closes its connection, dropping what it did
        not commit); the next use loads or connects again."""
        with self.lock:  # not while another thread uses it
            store, self.store = self.store, None
            if store is not None:
                store.discard()


def _load_or_new(folder: Path, dimension: int, generation: int) -> FaissStore:
    if generation == 0:
        return FaissStore(dimension)
    for _attempt in range(5):
        try:
            store = FaissStore.load(folder)
        except FileNotFoundError:
            # A writer in another process replaced this generation while we read it.
            time.sleep(0.05)
            continue
        if store.dimension != dimension:
            raise ValueError(
                f"vector store in {folder} has dimension {store.dimension}, the embedding model gives {dimension}: "
                "rebuild it with init_database.py --recreate-vs"
            )
        if store.keywords_rebuilt:
            _save_rebuilt_keywords(folder, store)
        return store
    return FaissStore.load(folder)


def _save_rebuilt_keywords(folder: Path, store: FaissStore) -> None:
    """A store saved before the keyword index existed (or with another tokenizer) got its terms on load;
    save them once, with the same chunks and vectors, so later loads need not tokenize everything again."""
    with FileLock(str(folder / LOCK_FILE)):
        if read_generation(folder) == store.generation:  # nobody saved a newer one meanwhile
            try:
                store.save(folder)
            except StoreSaveFailed as exc:  # only a shortcut for later loads: reading goes on
                logger.warning("could not save the rebuilt keyword index in %s: %s", folder, exc)
                return
            store.keywords_rebuilt = False


class VectorStoreCache:
    def __init__(self, capacity: int, open_remote: RemoteOpener | None = None):
        self.capacity = max(1, capacity)
        self.open_remote = open_remote
        self._handles: OrderedDict[tuple[str, str], StoreHandle] = OrderedDict()
        self._lock = threading.Lock()

    def _handle(self, key: tuple[str, str], folder: Path, dimension: int, vs_type: str = "faiss") -> StoreHandle:
        evicted: list[tuple[tuple[str, str], StoreHandle]] = []
        with self._lock:
            handle = self._handles.get(key)
            if handle is None or handle.folder != folder or handle.vs_type != vs_type:
                if handle is not None and handle.vs_type != "faiss":
                    evicted.append((key, handle))  # the knowledge base moved to another store
                handle = StoreHandle(folder, dimension, vs_type, key, self.open_remote)
                self._handles[key] = handle
            self._handles.move_to_end(key)
            while len(self._handles) > self.capacity:
                evicted.append(self._handles.popitem(last=False))
        for old_key, old in evicted:
            self._save_evicted(old_key, old)
        return handle

    def _save_evicted(self, key: tuple[str, str], old: StoreHandle) -> None:
        """Save changes made with not_refresh_vs_cache (the database knows them). If that fails (disk
        full), keep the store cached rather than lose them, and let this unrelated request go on."""
        try:
            old.save()
            if old.vs_type != "faiss":
                old.drop_store()  # nothing unsaved: close its connection
        except StoreUnavailable as exc:
            logger.warning("could not close evicted vector store %s: %s", old.folder, exc)
            old.drop_store()
        except StoreSaveFailed as exc:
            logger.warning("could not save evicted vector store %s: %s", old.folder, exc)
            with self._lock:
                if key not in self._handles:  # the next eviction tries again
                    self._handles[key] = old
                    self._handles.move_to_end(key, last=False)

    @contextmanager
    def read(self, key: tuple[str, str], folder: Path, dimension: int, vs_type: str = "faiss") -> Iterator[VectorStore]:
        handle = self._handle(key, folder, dimension, vs_type)
        with handle.lock:
            try:
                yield handle._ensure_current()
            except StoreUnavailable:
                handle.drop_store()  # its connection is broken: the next use connects again
                raise

    @contextmanager
    def write(
        self, key: tuple[str, str], folder: Path, dimension: int, *, save: bool = True, vs_type: str = "faiss"
    ) -> Iterator[VectorStore]:
        """Modify a store; on normal exit it is saved (unless save=False: a server store is always
        committed), on error reloaded from disk (a server store's transaction is rolled back)."""
        handle = self._handle(key, folder, dimension, vs_type)
        folder.mkdir(parents=True, exist_ok=True)
        with handle.lock, FileLock(str(folder / LOCK_FILE)):
            try:
                store = handle._ensure_current(writing=True)
                yield store
            except BaseException:
                handle.drop_store()  # drop half-applied changes; the next use reloads the saved state
                raise
            if store.remote or (save and store.dirty):
                try:
                    store.save(folder)
                except BaseException:
                    handle.drop_store()  # what could not be saved must not stay searchable (or be saved later)
                    raise

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            handle = self._handles.pop(key, None)
        _drop_server_stores([handle] if handle is not None else [])

    def forget_kb(self, kb_name: str) -> None:
        with self._lock:
            handles = [self._handles.pop(k) for k in [k for k in self._handles if k[0] == kb_name]]
        _drop_server_stores(handles)

    def close(self) -> None:
        """Close every server store's connection (tests, shutdown); local stores stay as saved."""
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        _drop_server_stores(handles)

    def save_all(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            handle.save()

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._handles)


def _drop_server_stores(handles: list[StoreHandle]) -> None:
    """Close the connections of forgotten stores (a FAISS store's SQLite database too: unsaved changes go,
    and with them the database's write lock)."""
    for handle in handles:
        handle.drop_store()
