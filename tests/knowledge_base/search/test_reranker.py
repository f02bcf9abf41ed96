"""The cross-encoder reranker path, with a tiny model the test builds and saves itself."""

import numpy as np
import pytest

from configs import reload_settings
from server.knowledge_base import paths, service
from server.knowledge_base.search import reranker as reranker_module

WORDS = "the a of and ship lamp harbour light keeper tea panda bamboo train rail fast city river bridge".split()
TEXTS = {f"doc{i}.txt": f"{WORDS[4 + i % 12]} {WORDS[4 + (i * 5) % 12]} near the {WORDS[4 + (i * 7) % 12]}" for i in range(12)}


def build_tiny_cross_encoder(folder):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)  # random weights, but the same ones every run

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "near"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=1, initializer_range=0.5,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def reranked_kb(kb_root, tmp_path, monkeypatch):
    model_root = tmp_path / "models"
    build_tiny_cross_encoder(model_root / "tiny-reranker")
    monkeypatch.setenv("CHATCHAT_MODEL_ROOT_PATH", str(model_root))
    service.create_kb("rr", embed_model="all-MiniLM-L6-v2")
    for name, text in TEXTS.items():
        paths.file_path("rr", name).write_text(text, encoding="utf-8")
    assert service.ingest_files("rr", list(TEXTS)).failed == {}
    monkeypatch.setenv("CHATCHAT_USE_RERANKER", "true")
    monkeypatch.setenv("CHATCHAT_RERANKER_MODEL", "tiny-reranker")
    monkeypatch.setenv("CHATCHAT_RERANKER_CANDIDATES", "8")
    reload_settings()
    reranker_module._rerankers.clear()
    yield model_root / "tiny-reranker"
    reranker_module._rerankers.clear()


def test_reranker_reorders_a_larger_candidate_pool_by_its_scores(reranked_kb):
    from sentence_transformers import CrossEncoder

    query = "the lamp of the harbour keeper"
    fused = service.search("rr", query, 8, 1.0, "hybrid", rerank=False)
    hits = service.search("rr", query, 3, 1.0, "hybrid")  # USE_RERANKER is on
    expected = CrossEncoder(str(reranked_kb)).predict([(query, h.chunk.page_content) for h in fused])
    best = [fused[i].chunk.doc_id for i in np.argsort(-expected, kind="stable")[:3]]
    assert [h.chunk.doc_id for h in hits] == best
    assert best != [h.chunk.doc_id for h in fused[:3]]  # the reranker really changed the answer
    assert [h.details["rank"] for h in hits] == [1, 2, 3]
    scores = [h.details["rerank_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert {h.details["fused_rank"] for h in hits} <= set(range(1, 9))


def test_the_model_is_loaded_once_and_shared(reranked_kb, monkeypatch):
    created = []
    original_init = reranker_module.Reranker.__init__

    def counting_init(self, *args, **kwargs):
        created.append(args[0])
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(reranker_module.Reranker, "__init__", counting_init)
    for query in ("tea and panda", "fast train", "river bridge"):
        assert len(service.search("rr", query, 3, 1.0, "hybrid")) == 3
    assert created == ["tiny-reranker"]


def test_a_missing_reranker_model_names_the_setting(reranked_kb, monkeypatch):
    monkeypatch.setenv("CHATCHAT_RERANKER_MODEL", "bge-reranker-large")
    reload_settings()
    with pytest.raises(reranker_module.UnknownRerankerModel, match="RERANKER_MODEL"):
        service.search("rr", "tea", 3, 1.0, "hybrid")
