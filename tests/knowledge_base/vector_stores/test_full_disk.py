"""A full disk during a save: memory stays what is on disk, no temporary files, a clear error.

ENOSPC is simulated (no root, no small tmpfs) in three ways: SQLite's own page limit (PRAGMA
max_page_count) makes it fail with SQLITE_FULL as on a full disk; a wrapper around the store's SQLite
connection fails its Nth call of a save (each statement and the commit are hit); and os.fsync or the
Nth file write fails while the snapshot or CURRENT is written, after the commit: the save has happened
then, so it stands (those files only speed up loads and tell other processes).
"""

from __future__ import annotations

import errno
import os
import sqlite3

import numpy as np
import pytest

from server.knowledge_base.keyword_index import tokenize
from server.knowledge_base.vector_stores import FaissStore, StoredChunk, VectorStoreCache, faiss_store
from server.knowledge_base.vector_stores.faiss_store import StoreSaveFailed, read_generation

DIM = 8
KEY = ("kb", "model")
FULL = OSError(errno.ENOSPC, "No space left on device")


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def add_file(store: FaissStore, source: str, words: list[str], seed: int) -> None:
    chunks = [StoredChunk("", f"{word} chunk", {"source": source}) for word in words]
    store.add(chunks, np.stack([unit(seed + i) for i in range(len(words))]))


class FailingConnection:
    """The store's SQLite connection, except that its nth call (1-based) and later ones find the disk full
    (only calls of ``methods`` count and fail)."""

    def __init__(
        self, db: sqlite3.Connection, nth: int, methods: tuple[str, ...] = ("execute", "executemany", "commit")
    ):
        self.db, self.nth, self.calls, self.methods = db, nth, 0, methods

    def _call(self, name: str, *args):
        self.calls += name in self.methods
        if name in self.methods and self.calls >= self.nth:
            raise sqlite3.OperationalError("database or disk is full")
        return getattr(self.db, name)(*args)

    def execute(self, *args):
        return self._call("execute", *args)

    def executemany(self, *args):
        return self._call("executemany", *args)

    def commit(self):
        return self._call("commit")

    def __getattr__(self, name):  # rollback, close, in_transaction: as they are
        return getattr(self.db, name)

    def __enter__(self):
        return self.db.__enter__()

    def __exit__(self, *exc):
        return self.db.__exit__(*exc)


def fail_on_call(monkeypatch, module, name: str, nth: int) -> None:
    """Make module.name raise ENOSPC on its nth call (1-based) and from then on."""
    real = getattr(module, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= nth:
            raise FULL
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


class HalfWritingFile:
    """A file whose nth write stores half the data and then finds the disk full."""

    def __init__(self, handle, state: dict):
        self.handle, self.state = handle, state

    def write(self, data: bytes) -> int:
        self.state["n"] += 1
        if self.state["n"] >= self.state["fail_at"]:
            self.handle.write(data[: len(data) // 2])
            raise FULL
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def fail_write(monkeypatch, nth: int) -> None:
    state = {"n": 0, "fail_at": nth}

    def half_writing_open(*args, **kwargs):
        return HalfWritingFile(open(*args, **kwargs), state)  # noqa: SIM115 (closed by the wrapper's __exit__)

    monkeypatch.setattr(faiss_store, "open", half_writing_open, raising=False)


def all_chunks(store: FaissStore) -> dict:
    return {c.doc_id: c.page_content for chunks, _ in store.export() for c in chunks}


def disk_state(folder) -> dict:
    store = FaissStore.load(folder)
    try:
        return all_chunks(store)
    finally:
        store.discard()


def leftovers(folder) -> list[str]:
    """Files that are neither the store's nor its locks: temporary files, snapshots of failed saves."""
    kept = {"CURRENT", ".lock", faiss_store.DB_FILE, f"{faiss_store.DB_FILE}-wal", f"{faiss_store.DB_FILE}-shm"}
    names = sorted(p.name for p in folder.iterdir())
    snapshots = (faiss_store.SNAPSHOT, faiss_store.KEYWORD_SNAPSHOT)
    return [n for n in names if n not in kept and not any(pattern.match(n) for pattern in snapshots)]


def found_by_keyword(store: FaissStore, word: str) -> list[str]:
    return [chunk.metadata["source"] for chunk, _ in store.keyword_search(tokenize(word), 10)]


def found_by_vector(store: FaissStore, seed: int) -> list[str]:
    return [hit.chunk.metadata["source"] for hit in store.search(unit(seed), 1, score_threshold=0.001)]


def saved_cache(folder) -> VectorStoreCache:
    cache = VectorStoreCache(capacity=2)
    with cache.write(KEY, folder, DIM) as store:
        add_file(store, "kept.txt", ["apple", "banana"], seed=0)
    return cache


# A write block's SQLite calls, in order: BEGIN, the seq read, the delete's lookup, the insert (add), then
# the save's meta write, the tokenizer read and the commit; "page limit" is SQLite's own SQLITE_FULL.
FAILURES = [("sqlite", n) for n in range(1, 8)] + [("page limit", 0)]


@pytest.mark.parametrize(("how", "nth"), FAILURES, ids=[f"{how}{nth}" for how, nth in FAILURES])
def test_a_failed_save_leaves_memory_as_on_disk(tmp_path, how, nth):
    cache = saved_cache(tmp_path)
    before = disk_state(tmp_path)
    generation = read_generation(tmp_path)
    with pytest.raises(StoreSaveFailed) as failure, cache.write(KEY, tmp_path, DIM) as store:
        if how == "sqlite":
            store._db = FailingConnection(store._db, nth)
        else:
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count = {pages}")
        add_file(store, "failed.txt", [f"zucchini {'long ' * 500}{i}" for i in range(20)], seed=50)
    assert str(failure.value) == "disk full while saving the vector store (No space left on device)"
    assert failure.value.errno == errno.ENOSPC and isinstance(failure.value, OSError)
    assert read_generation(tmp_path) == generation and disk_state(tmp_path) == before
    assert leftovers(tmp_path) == []
    with cache.read(KEY, tmp_path, DIM) as store:
        assert all_chunks(store) == before and not store.dirty
        assert found_by_keyword(store, "zucchini") == [] and found_by_vector(store, 50) == []
        assert found_by_keyword(store, "apple") == ["kept.txt"]
    # The next successful save persists only what it was given, not the failed upload's chunks.
    with cache.write(KEY, tmp_path, DIM) as store:
        add_file(store, "next.txt", ["cherry"], seed=70)
    saved = FaissStore.load(tmp_path)
    assert sorted({c.metadata["source"] for c in saved.get(list(all_chunks(saved)))}) == ["kept.txt", "next.txt"]
    assert found_by_keyword(saved, "zucchini") == [] and found_by_keyword(saved, "cherry") == ["next.txt"]
    assert leftovers(tmp_path) == []


AFTER_COMMIT = [("fsync", n, snapshot) for n in (1, 2, 3) for snapshot in (False, True) if n < 3 or snapshot]
AFTER_COMMIT += [("write", 1, False), ("write", 1, True), ("write", 2, True)]


@pytest.mark.parametrize(
    ("how", "nth", "snapshot"), AFTER_COMMIT, ids=[f"{h}{n}{'-snapshot' * s}" for h, n, s in AFTER_COMMIT]
)
def test_a_full_disk_after_the_commit_keeps_the_saved_state(tmp_path, monkeypatch, how, nth, snapshot):
    """The snapshot (when one is due) and CURRENT come after the commit: the save stands, they are skipped."""
    cache = saved_cache(tmp_path)
    generation = read_generation(tmp_path)
    if snapshot:
        monkeypatch.setattr(faiss_store, "SNAPSHOT_MIN_CHANGES", 0)
    with monkeypatch.context() as patch:
        if how == "fsync":
            fail_on_call(patch, os, "fsync", nth)
        else:
            fail_write(patch, nth)
        with cache.write(KEY, tmp_path, DIM) as store:
            add_file(store, "late.txt", ["walnut"], seed=90)
    assert read_generation(tmp_path) in (generation, generation + 1)  # CURRENT: only a hint, maybe late
    with cache.read(KEY, tmp_path, DIM) as store:
        assert all_chunks(store) == disk_state(tmp_path) and not store.dirty
        assert found_by_keyword(store, "walnut") == ["late.txt"] and len(store) == 3
    assert found_by_keyword(FaissStore.load(tmp_path), "walnut") == ["late.txt"]
    assert leftovers(tmp_path) == []
    with cache.write(KEY, tmp_path, DIM) as store:  # the next save writes CURRENT past the late one
        add_file(store, "after.txt", ["pecan"], seed=95)
    assert read_generation(tmp_path) == generation + 2 == FaissStore.load(tmp_path).generation


def test_a_failed_save_of_an_evicted_store_keeps_its_changes_cached(tmp_path):
    """Changes made with save=False are known to the database: a full disk at eviction must not lose them."""
    cache = VectorStoreCache(capacity=1)
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    with cache.write(("a", "m"), folder_a, DIM) as store:
        add_file(store, "saved.txt", ["fig"], seed=1)
    with cache.write(("a", "m"), folder_a, DIM, save=False) as store:
        add_file(store, "unsaved.txt", ["plum"], seed=5)
        real, store._db = store._db, FailingConnection(store._db, 1)
    with cache.read(("b", "m"), folder_b, DIM):  # evicts a, whose save fails: this read still works
        pass
    cached = cache.keys()
    assert ("a", "m") in cached and not any(p.name.endswith(".tmp") for p in folder_a.iterdir())
    store._db = real  # the disk has room again
    with cache.read(("a", "m"), folder_a, DIM) as store:
        assert found_by_keyword(store, "plum") == ["unsaved.txt"]
    with cache.read(("b", "m"), folder_b, DIM):  # eviction saves it now
        pass
    assert found_by_keyword(FaissStore.load(folder_a), "plum") == ["unsaved.txt"]


def test_a_failed_save_of_rebuilt_keywords_does_not_fail_the_read(tmp_path, monkeypatch):
    store = FaissStore(DIM)
    add_file(store, "old.txt", ["fig"], seed=3)
    store.save(tmp_path)
    store._db.execute("UPDATE meta SET value = 0 WHERE key = 'tokenizer'")  # saved by another tokenizer
    store.discard()
    real_connect = faiss_store._connect
    failing = lambda *args, **kw: FailingConnection(real_connect(*args, **kw), 1, ("commit",))  # noqa: E731
    monkeypatch.setattr(faiss_store, "_connect", failing)
    cache = VectorStoreCache(capacity=1)
    with cache.read(KEY, tmp_path, DIM) as loaded:
        assert found_by_keyword(loaded, "fig") == ["old.txt"]
    monkeypatch.undo()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert FaissStore.load(tmp_path).keywords_rebuilt  # not saved: the next load makes them again
    # and the failed save did not keep SQLite's write lock: another writer gets through
    other = FaissStore.load(tmp_path)
    add_file(other, "new.txt", ["kiwi"], seed=9)
    other.save(tmp_path)


def test_the_api_answers_a_failed_save_with_a_disk_full_envelope():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from server import security

    app = FastAPI()

    @app.post("/knowledge_base/upload_docs")
    def upload():
        raise StoreSaveFailed(FULL)

    security.install(app)
    response = TestClient(app).post("/knowledge_base/upload_docs")
    assert response.status_code == 507
    assert response.json() == {
        "code": 507,
        "msg": "保存向量库失败：disk full while saving the vector store (No space left on device)",
        "data": None,
    }
