"""In-memory cache of vector stores with per-store locking, safe across threads and processes.

* An LRU of at most ``capacity`` stores; a store with unsaved changes is saved when evicted.
* One lock per store: readers and writers of one store take turns, other stores go on.
* Writers also hold a file lock in the store's folder, and every access first checks the
  generation on disk: a store saved by another process (init_database.py while the API
  server runs) is reloaded before it is used, so neither process loses the other's work.
* A failed load leaves no half-made entry behind: the next caller simply tries again.
* A failed save (disk full) leaves in memory what is on disk: a writer's changes are dropped
  with the store, which the next use reloads, so chunks the database never recorded are neither
  searchable nor saved later. A store evicted with unsaved changes stays cached until it saves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from server.knowledge_base.vector_stores.faiss_store import FaissStore, StoreSaveFailed, read_generation

LOCK_FILE = ".lock"
logger = logging.getLogger(__name__)


class StoreHandle:
    def __init__(self, folder: Path, dimension: int):
        self.folder = folder
        self.dimension = dimension
        self.lock = threading.RLock()
        self.store: FaissStore | None = None

    def _ensure_current(self) -> FaissStore:
        """Load the store, or reload it if another process saved a newer generation."""
        on_disk = read_generation(self.folder)
        if self.store is not None and (on_disk <= self.store.generation or self.store.dirty):
            return self.store
        self.store = _load_or_new(self.folder, self.dimension, on_disk)
        return self.store

    def save(self) -> None:
        if not self.folder.is_dir():  # its knowledge base was deleted: saving would bring the folder back
            return
        with self.lock, FileLock(str(self.folder / LOCK_FILE)):
            if self.store is not None and self.store.dirty:
                self.store.save(self.folder)


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
    """A store saved before the keyword index existed got its terms on load; save them once, as a new
    generation with the same chunks and vectors, so later loads need not tokenize everything again."""
    with FileLock(str(folder / LOCK_FILE)):
        if read_generation(folder) == store.generation:  # nobody saved a newer one meanwhile
            try:
                store.save(folder)
            except StoreSaveFailed as exc:  # only a shortcut for later loads: reading goes on
                logger.warning("could not save the rebuilt keyword index in %s: %s", folder, exc)
                return
            store.keywords_rebuilt = False


class VectorStoreCache:
    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._handles: OrderedDict[tuple[str, str], StoreHandle] = OrderedDict()
        self._lock = threading.Lock()

    def _handle(self, key: tuple[str, str], folder: Path, dimension: int) -> StoreHandle:
        evicted: list[tuple[tuple[str, str], StoreHandle]] = []
        with self._lock:
            handle = self._handles.get(key)
            if handle is None or handle.folder != folder:
                handle = StoreHandle(folder, dimension)
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
        except StoreSaveFailed as exc:
            logger.warning("could not save evicted vector store %s: %s", old.folder, exc)
            with self._lock:
                if key not in self._handles:  # the next eviction tries again
                    self._handles[key] = old
                    self._handles.move_to_end(key, last=False)

    @contextmanager
    def read(self, key: tuple[str, str], folder: Path, dimension: int) -> Iterator[FaissStore]:
        handle = self._handle(key, folder, dimension)
        with handle.lock:
            yield handle._ensure_current()

    @contextmanager
    def write(self, key: tuple[str, str], folder: Path, dimension: int, *, save: bool = True) -> Iterator[FaissStore]:
        """Modify a store; on normal exit it is saved (unless save=False), on error reloaded from disk."""
        handle = self._handle(key, folder, dimension)
        folder.mkdir(parents=True, exist_ok=True)
        with handle.lock, FileLock(str(folder / LOCK_FILE)):
            store = handle._ensure_current()
            try:
                yield store
            except BaseException:
                handle.store = None  # drop half-applied changes; the next use reloads the saved state
                raise
            if save and store.dirty:
                try:
                    store.save(folder)
                except BaseException:
                    handle.store = None  # what could not be saved must not stay searchable (or be saved later)
                    raise

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._handles.pop(key, None)

    def forget_kb(self, kb_name: str) -> None:
        with self._lock:
            for key in [k for k in self._handles if k[0] == kb_name]:
                self._handles.pop(key)

    def save_all(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            handle.save()

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._handles)
