"""A full disk during a save: memory stays what is on disk, no temporary files, a clear error.

ENOSPC is simulated (no root, no small tmpfs): the Nth fsync, or the Nth file write, of a save fails.
Each _write_durably makes two fsyncs (the file, then its folder after the rename) for docs, index,
keywords and CURRENT in that order, so every point of a save is hit.
"""

from __future__ import annotations

import errno
import os

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


def disk_state(folder) -> dict:
    store = FaissStore.load(folder)
    return {c.doc_id: c.page_content for c in store.chunks.values()}


def memory_state(store: FaissStore) -> dict:
    return {c.doc_id: c.page_content for c in store.chunks.values()}


def leftovers(folder) -> list[str]:
    generation = read_generation(folder)
    names = sorted(p.name for p in folder.iterdir())
    return [
        n for n in names if n.endswith(".tmp") or (n[0] != "." and n.split(".")[1:2] not in ([], [str(generation)]))
    ]


def found_by_keyword(store: FaissStore, word: str) -> list[str]:
    return [chunk.metadata["source"] for chunk, _ in store.keyword_search(tokenize(word), 10)]


def found_by_vector(store: FaissStore, seed: int) -> list[str]:
    return [hit.chunk.metadata["source"] for hit in store.search(unit(seed), 1, score_threshold=0.001)]


def saved_cache(folder) -> VectorStoreCache:
    cache = VectorStoreCache(capacity=2)
    with cache.write(KEY, folder, DIM) as store:
        add_file(store, "kept.txt", ["apple", "banana"], seed=0)
    return cache


FAILURES = [("fsync", n) for n in range(1, 8)] + [("write", n) for n in range(1, 5)]


@pytest.mark.parametrize(("how", "nth"), FAILURES, ids=[f"{how}{nth}" for how, nth in FAILURES])
def test_a_failed_save_leaves_memory_as_on_disk(tmp_path, monkeypatch, how, nth):
    cache = saved_cache(tmp_path)
    before = disk_state(tmp_path)
    generation = read_generation(tmp_path)
    with monkeypatch.context() as patch:
        if how == "fsync":
            fail_on_call(patch, os, "fsync", nth)
        else:
            fail_write(patch, nth)
        with pytest.raises(StoreSaveFailed) as failure, cache.write(KEY, tmp_path, DIM) as store:
            add_file(store, "failed.txt", ["zucchini"], seed=50)
    assert str(failure.value) == "disk full while saving the vector store (No space left on device)"
    assert failure.value.errno == errno.ENOSPC and isinstance(failure.value, OSError)
    assert read_generation(tmp_path) == generation and disk_state(tmp_path) == before
    assert leftovers(tmp_path) == []
    with cache.read(KEY, tmp_path, DIM) as store:
        assert memory_state(store) == before and not store.dirty
        assert found_by_keyword(store, "zucchini") == [] and found_by_vector(store, 50) == []
        assert found_by_keyword(store, "apple") == ["kept.txt"]
    # The next successful save persists only what it was given, not the failed upload's chunks.
    with cache.write(KEY, tmp_path, DIM) as store:
        add_file(store, "next.txt", ["cherry"], seed=70)
    saved = FaissStore.load(tmp_path)
    assert sorted({c.metadata["source"] for c in saved.chunks.values()}) == ["kept.txt", "next.txt"]
    assert found_by_keyword(saved, "zucchini") == [] and found_by_keyword(saved, "cherry") == ["next.txt"]
    assert leftovers(tmp_path) == []


def test_failing_only_the_folder_sync_after_current_keeps_the_saved_generation(tmp_path, monkeypatch):
    """The 8th fsync comes after CURRENT was renamed: readers already load the new generation."""
    cache = saved_cache(tmp_path)
    with monkeypatch.context() as patch:
        fail_on_call(patch, os, "fsync", 8)
        with cache.write(KEY, tmp_path, DIM) as store:
            add_file(store, "late.txt", ["walnut"], seed=90)
    with cache.read(KEY, tmp_path, DIM) as store:
        assert memory_state(store) == disk_state(tmp_path) and not store.dirty
        assert found_by_keyword(store, "walnut") == ["late.txt"]
    assert leftovers(tmp_path) == []


def test_a_failed_save_of_an_evicted_store_keeps_its_changes_cached(tmp_path, monkeypatch):
    """Changes made with save=False are known to the database: a full disk at eviction must not lose them."""
    cache = VectorStoreCache(capacity=1)
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    with cache.write(("a", "m"), folder_a, DIM, save=False) as store:
        add_file(store, "unsaved.txt", ["plum"], seed=5)
    with monkeypatch.context() as patch:
        fail_on_call(patch, os, "fsync", 1)
        with cache.read(("b", "m"), folder_b, DIM):  # evicts a, whose save fails: this read still works
            pass
    cached = cache.keys()
    assert ("a", "m") in cached and not any(p.name.endswith(".tmp") for p in folder_a.iterdir())
    with cache.read(("a", "m"), folder_a, DIM) as store:
        assert found_by_keyword(store, "plum") == ["unsaved.txt"]
    with cache.read(("b", "m"), folder_b, DIM):  # the disk has room again: eviction saves it
        pass
    assert found_by_keyword(FaissStore.load(folder_a), "plum") == ["unsaved.txt"]


def test_a_failed_save_of_rebuilt_keywords_does_not_fail_the_read(tmp_path, monkeypatch):
    store = FaissStore(DIM)
    add_file(store, "old.txt", ["fig"], seed=3)
    store.save(tmp_path)
    (tmp_path / f"keywords.{store.generation}.json").unlink()  # as saved before the keyword index existed
    cache = VectorStoreCache(capacity=1)
    with monkeypatch.context() as patch:
        fail_on_call(patch, os, "fsync", 1)
        with cache.read(KEY, tmp_path, DIM) as loaded:
            assert found_by_keyword(loaded, "fig") == ["old.txt"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


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
