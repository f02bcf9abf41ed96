"""The FAISS store: scores, deletes, atomic saves, and a kill in the middle of a save."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from server.knowledge_base.vector_stores import FaissStore, StoreCorrupted, StoredChunk, VectorStoreCache
from server.knowledge_base.vector_stores.faiss_store import read_generation

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def make_store(n: int, source: str = "a.txt") -> FaissStore:
    store = FaissStore(DIM)
    chunks = [StoredChunk("", f"text {i}", {"source": source, "i": i}) for i in range(n)]
    store.add(chunks, np.stack([unit(i) for i in range(n)]))
    return store


def test_scores_are_half_one_minus_cosine_and_threshold_filters():
    store = make_store(5)
    hits = store.search(unit(2), top_k=5, score_threshold=1.0)
    assert hits[0].chunk.page_content == "text 2"
    assert hits[0].score == pytest.approx(0.0, abs=1e-6)
    assert len(hits) == 5
    for hit in hits:
        cosine = float(unit(2) @ unit(hit.chunk.metadata["i"]))
        assert hit.score == pytest.approx((1 - cosine) / 2, abs=1e-5)
    strict = store.search(unit(2), top_k=5, score_threshold=0.01)
    assert [h.chunk.page_content for h in strict] == ["text 2"]


def test_top_k_limits_hits():
    assert len(make_store(10).search(unit(0), top_k=3)) == 3


def test_delete_by_source_removes_exactly_that_file():
    store = make_store(4, "a.txt")
    store.add([StoredChunk("", "other", {"source": "b.txt"})], unit(99).reshape(1, -1))
    removed = store.delete(store.ids_for_source("a.txt"))
    assert removed == 4 and len(store) == 1 and store.index.ntotal == 1
    assert store.search(unit(0), top_k=5)[0].chunk.metadata["source"] == "b.txt"


def test_texts_and_vectors_of_some_sources_survive_deletes_and_respect_the_limit():
    store = make_store(4, "a.txt")
    store.add([StoredChunk("", "other", {"source": "b.txt"})], unit(99).reshape(1, -1))
    store.delete(store.ids_for_source("a.txt")[:1])  # ids and positions no longer line up
    texts, vectors = store.texts_and_vectors({"a.txt"})
    assert texts == ["text 1", "text 2", "text 3"]
    np.testing.assert_allclose(vectors, np.stack([unit(1), unit(2), unit(3)]), atol=1e-6)
    texts, vectors = store.texts_and_vectors({"a.txt", "b.txt"}, limit=2)
    assert len(texts) == 2 and vectors.shape == (2, DIM)
    assert store.texts_and_vectors({"missing.txt"})[1].shape == (0, DIM)


def test_save_and_load_round_trip(tmp_path):
    store = make_store(6)
    store.delete(store.ids_for_source("a.txt")[:2])
    store.save(tmp_path)
    loaded = FaissStore.load(tmp_path)
    assert len(loaded) == 4 and loaded.index.ntotal == 4
    assert loaded.search(unit(5), top_k=1)[0].chunk.page_content == "text 5"
    new_ids = loaded.add([StoredChunk("", "new", {"source": "c"})], unit(50).reshape(1, -1))
    assert loaded.search(unit(50), top_k=1)[0].chunk.doc_id == new_ids[0]
    # The per-file lookup is rebuilt on load and follows later changes.
    assert loaded.ids_for_source("a.txt") == store.ids_for_source("a.txt") and len(loaded.ids_for_source("a.txt")) == 4
    assert loaded.ids_for_source("c") == new_ids
    loaded.delete(new_ids)
    assert loaded.ids_for_source("c") == []


def test_no_pickle_files_are_written(tmp_path):
    make_store(3).save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(name.endswith(".pkl") for name in names)
    assert names == ["CURRENT", "docs.1.json", "index.1.faiss", "keywords.1.json"]


def test_only_current_generation_is_kept(tmp_path):
    store = make_store(2)
    store.save(tmp_path)
    store.add([StoredChunk("", "x", {"source": "b"})], unit(7).reshape(1, -1))
    store.save(tmp_path)
    assert read_generation(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "docs.2.json", "index.2.faiss", "keywords.2.json"]


def test_corrupted_files_raise_clear_error(tmp_path):
    make_store(2).save(tmp_path)
    (tmp_path / "index.1.faiss").write_bytes(b"garbage")
    with pytest.raises(StoreCorrupted, match="cannot be read"):
        FaissStore.load(tmp_path)


KILLER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {repo!r})
    from server.knowledge_base.vector_stores import FaissStore, StoredChunk
    from pathlib import Path
    folder = Path({folder!r})
    store = FaissStore.load(folder)
    rng = np.random.default_rng(0)
    print("ready", flush=True)
    while True:  # save bigger and bigger generations until killed
        vectors = rng.normal(size=(2000, 64)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add([StoredChunk("", "x" * 200, {{"source": "big"}}) for _ in range(2000)], vectors)
        store.save(folder)
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.2])
def test_kill_during_save_leaves_a_loadable_store(tmp_path, delay):
    from tests.conftest import REPO_ROOT

    seed = FaissStore(64)
    vectors = np.eye(64, dtype=np.float32)[:3]
    seed.add([StoredChunk("", f"seed {i}", {"source": "seed"}) for i in range(3)], vectors)
    seed.save(tmp_path)
    script = KILLER.format(repo=str(REPO_ROOT), folder=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    loaded = FaissStore.load(tmp_path)  # must not raise
    assert loaded.index.ntotal == len(loaded)
    assert len(loaded) >= 3 and (len(loaded) - 3) % 2000 == 0
    assert {c.page_content for c in loaded.get(loaded.ids_for_source("seed"))} == {"seed 0", "seed 1", "seed 2"}
    # The keyword index of the same generation came with it: the same chunks, nothing rebuilt.
    assert not loaded.keywords_rebuilt and loaded.keywords.keys() == set(loaded._doc_ids)
    assert len(loaded.keyword_search(["seed"], 10)) == 3


def test_cache_evicts_least_recently_used_and_saves_unsaved_changes(tmp_path):
    cache = VectorStoreCache(capacity=1)
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    with cache.write(("a", "m"), folder_a, DIM, save=False) as store:
        store.add([StoredChunk("", "kept", {"source": "s"})], unit(1).reshape(1, -1))
    assert read_generation(folder_a) == 0  # not saved yet
    with cache.read(("b", "m"), folder_b, DIM):
        pass
    assert cache.keys() == [("b", "m")]
    assert read_generation(folder_a) == 1  # saved on eviction
    with cache.read(("a", "m"), folder_a, DIM) as store:
        assert [c.page_content for c in store.chunks.values()] == ["kept"]


def test_cache_reloads_a_store_saved_by_another_process(tmp_path):
    cache = VectorStoreCache(capacity=2)
    with cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add([StoredChunk("", "first", {"source": "s"})], unit(1).reshape(1, -1))
    other = FaissStore.load(tmp_path)  # stands for another process
    other.add([StoredChunk("", "second", {"source": "t"})], unit(2).reshape(1, -1))
    other.save(tmp_path)
    with cache.read(("a", "m"), tmp_path, DIM) as store:
        assert sorted(c.page_content for c in store.chunks.values()) == ["first", "second"]


def test_failed_write_drops_half_applied_changes(tmp_path):
    cache = VectorStoreCache(capacity=1)
    with cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add([StoredChunk("", "saved", {"source": "s"})], unit(1).reshape(1, -1))
    with pytest.raises(RuntimeError), cache.write(("a", "m"), tmp_path, DIM) as store:
        store.add([StoredChunk("", "half", {"source": "s"})], unit(2).reshape(1, -1))
        raise RuntimeError("embedding failed midway")
    with cache.read(("a", "m"), tmp_path, DIM) as store:
        assert [c.page_content for c in store.chunks.values()] == ["saved"]
