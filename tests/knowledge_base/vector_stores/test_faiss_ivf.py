"""A FAISS store past FAISS_IVF_THRESHOLD chunks switches to an IVF index that still deletes, reads
vectors back, saves (a snapshot, so loads need not train it again) and loads, and finds what exact
search finds."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from configs import reload_settings
from server.knowledge_base.vector_stores import FaissStore, StoredChunk

DIMENSION = 64


def clustered(count: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """Unit vectors around a few hundred centres, as embeddings of related texts are."""
    noise = rng.normal(0, 1.0 / np.sqrt(DIMENSION), (count, DIMENSION))
    vectors = centers[rng.integers(0, len(centers), count)] + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setenv("CHATCHAT_FAISS_IVF_THRESHOLD", "1000")
    reload_settings()
    yield
    monkeypatch.delenv("CHATCHAT_FAISS_IVF_THRESHOLD")
    reload_settings()


def test_past_the_threshold_the_store_uses_ivf_and_keeps_working(small_threshold, tmp_path):
    rng = np.random.default_rng(7)
    centers = rng.normal(0, 1, (200, DIMENSION))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = clustered(3000, rng, centers)
    store = FaissStore(DIMENSION)
    chunks = [StoredChunk("", f"text {i}", {"source": f"f{i % 30}.txt"}) for i in range(len(vectors))]
    store.add(chunks[:900], vectors[:900])
    assert not isinstance(store.index, faiss.IndexIVF)
    store.add(chunks[900:], vectors[900:])
    assert isinstance(store.index, faiss.IndexIVF)

    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(vectors)
    queries = clustered(100, rng, centers)
    _, truth = exact.search(queries, 10)
    recall = np.mean(
        [
            len({h.chunk.doc_id for h in store.search(q, 10)} & {chunks[i].doc_id for i in row}) / 10
            for q, row in zip(queries, truth, strict=True)
        ]
    )
    assert recall >= 0.98

    removed = store.ids_for_source("f3.txt")
    assert store.delete(removed) == 100 and len(store) == 2900
    assert np.allclose(store.similarities(vectors[4], [chunks[4].doc_id]), [1.0], atol=1e-5)
    store.save(tmp_path)
    loaded = FaissStore.load(tmp_path)
    assert isinstance(loaded.index, faiss.IndexIVF) and len(loaded) == 2900
    assert loaded.search(vectors[5], 1)[0].chunk.doc_id == chunks[5].doc_id
    assert all(hit.chunk.metadata["source"] != "f3.txt" for hit in loaded.search(vectors[3], 20))
    # IVF training is costly: the first save wrote a snapshot, later small saves replay on top of it.
    assert sorted(p.name for p in tmp_path.glob("index.*.faiss")) == [f"index.{store.generation}.faiss"]
    loaded.delete(loaded.ids_for_source("f4.txt"))
    loaded.add(chunks[3:4], vectors[3:4])  # a deleted chunk back, under a new int id
    loaded.save(tmp_path)
    assert len(list(tmp_path.glob("index.*.faiss"))) == 1
    again = FaissStore.load(tmp_path)
    assert isinstance(again.index, faiss.IndexIVF) and len(again) == again.index.ntotal == 2801
    assert again.search(vectors[3], 1)[0].chunk.doc_id == chunks[3].doc_id
    assert all(hit.chunk.metadata["source"] != "f4.txt" for hit in again.search(vectors[4], 20))


def test_a_rebuild_past_the_threshold_trains_ivf_once_and_snapshots_it(small_threshold, tmp_path):
    """After clear() the store keeps its rows out of memory; finishing a rebuild of an IVF-sized store
    trains the index then, so that loads read it from a snapshot instead of training it again."""
    rng = np.random.default_rng(3)
    vectors = clustered(1500, rng, rng.normal(0, 1, (50, DIMENSION)))
    store = FaissStore(DIMENSION)
    store.save(tmp_path)
    store.clear()
    chunks = [StoredChunk("", f"text {i}", {"source": f"f{i % 10}.txt"}) for i in range(len(vectors))]
    store.add(chunks, vectors)
    store.save(tmp_path)
    assert store.index.ntotal == 0 and not list(tmp_path.glob("index.*.faiss"))
    assert store.finish_rebuild() and isinstance(store.index, faiss.IndexIVF)
    store.dirty = True
    store.save(tmp_path)
    assert [p.name for p in tmp_path.glob("index.*.faiss")] == [f"index.{store.generation}.faiss"]
    assert not store.finish_rebuild()  # built: nothing more to do
    loaded = FaissStore.load(tmp_path)
    assert isinstance(loaded.index, faiss.IndexIVF) and loaded._snapshot_seq == store.generation
    assert loaded.search(vectors[7], 1)[0].chunk.doc_id == chunks[7].doc_id

    small = FaissStore(DIMENSION)
    small.clear()
    small.add(chunks[:500], vectors[:500])
    assert not small.finish_rebuild() and small.index.ntotal == 0  # flat: built from the rows when read
