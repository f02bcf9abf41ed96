"""Search modes over a real knowledge base, with the default embedding model (English-only MiniLM)."""

import sqlite3
from contextlib import closing

import pytest
from langchain_core.documents import Document

from configs import reload_settings
from server.knowledge_base import paths, service
from server.knowledge_base.search import SearchOptions
from server.knowledge_base.vector_stores import get_store_cache
from server.knowledge_base.vector_stores.faiss_store import TOKENIZER_VERSION

PASSAGES = {
    "quantum.txt": "量子纠缠是量子力学中的一种现象，两个粒子无论相距多远，测量其中一个会立刻影响另一个的状态。",
    "tea.txt": "龙井茶产自杭州西湖一带，以色绿、香郁、味甘、形美著称，是中国十大名茶之一。",
    "rail.txt": "京沪高速铁路全长一千三百一十八公里，连接北京和上海，最高运营时速三百五十公里。",
    "panda.txt": "大熊猫主要生活在四川、陕西和甘肃的山区，以竹子为主要食物，是中国的国宝。",
    "silk.txt": "丝绸之路是古代连接东西方的贸易通道，起点是长安，途经中亚抵达地中海沿岸。",
    "tides.txt": "潮汐是海水在月球和太阳引力作用下发生的周期性涨落现象，每天通常有两次高潮。",
    "printing.txt": "活字印刷术由北宋的毕昇发明，他用胶泥制成单个字模，排版后印刷，大大提高了效率。",
    "harbour.txt": "The lighthouse keeper lit the lamp every evening so that ships could find the harbour.",
    "traditional.txt": "臺灣的鐵路電氣化工程於一九七零年代完成，縱貫線從基隆延伸到高雄。",
}


@pytest.fixture
def zh_kb(kb_root):
    service.create_kb("zh")
    for name, text in PASSAGES.items():
        paths.file_path("zh", name).write_text(text, encoding="utf-8")
    assert service.ingest_files("zh", list(PASSAGES)).failed == {}
    return "zh"


def sources(query, mode, top_k=3, kb="zh", **kwargs):
    return [hit.chunk.metadata["source"] for hit in service.search(kb, query, top_k, 1.0, mode, **kwargs)]


def test_a_chinese_keyword_query_finds_a_passage_vector_search_misses(zh_kb):
    assert "panda.txt" not in sources("大熊猫吃什么？", "vector")  # an English model cannot read it
    assert sources("大熊猫吃什么？", "keyword")[0] == "panda.txt"
    assert sources("大熊猫吃什么？", "hybrid")[0] == "panda.txt"
    assert sources("大熊猫吃什么？", None)[0] == "panda.txt"  # hybrid is the default


def test_each_mode_says_why_a_hit_was_found(zh_kb):
    (vector_hit,) = service.search("zh", "ships and a lighthouse", 1, 1.0, "vector")
    assert vector_hit.details["search_mode"] == "vector" and vector_hit.details["vector_rank"] == 1
    assert "keyword_rank" not in vector_hit.details
    keyword_hits = service.search("zh", "毕昇", 5, 1.0, "keyword")
    assert [h.chunk.metadata["source"] for h in keyword_hits] == ["printing.txt"]  # only chunks with the word
    hybrid = service.search("zh", "毕昇发明了什么", 5, 1.0, "hybrid")
    assert len(hybrid) == 5 and hybrid[0].chunk.metadata["source"] == "printing.txt"
    top = hybrid[0].details
    assert top["keyword_rank"] == 1 and top["vector_rank"] is not None and top["fused_rank"] == top["rank"] == 1
    assert top["keyword_score"] > 0 and -1 <= top["vector_score"] <= 1


def test_score_keeps_its_meaning_in_every_mode_so_the_threshold_works(zh_kb):
    for mode in ("vector", "keyword", "hybrid"):
        for hit in service.search("zh", "龙井茶产自哪里", 5, 1.0, mode):
            assert hit.score == pytest.approx((1 - hit.details["vector_score"]) / 2, abs=1e-5)
    everything = service.search("zh", "龙井茶产自哪里", 5, 1.0, "hybrid")
    cut = sorted(hit.score for hit in everything)[1]
    kept = service.search("zh", "龙井茶产自哪里", 5, cut, "hybrid")
    assert kept and all(hit.score <= cut for hit in kept) and len(kept) < len(everything)


def test_unknown_mode_names_the_setting(zh_kb):
    with pytest.raises(ValueError, match="SEARCH_MODE"):
        service.search("zh", "x", 3, 1.0, "semantic")


def test_fusion_weights_move_the_ranking_toward_the_weighted_side(zh_kb, monkeypatch):
    query = "京沪高铁有多长？"
    keyword_order = sources(query, "keyword", top_k=3)
    vector_order = sources(query, "vector", top_k=3)
    monkeypatch.setenv("CHATCHAT_HYBRID_VECTOR_WEIGHT", "0")
    reload_settings()
    assert sources(query, "hybrid", top_k=len(keyword_order)) == keyword_order
    monkeypatch.setenv("CHATCHAT_HYBRID_VECTOR_WEIGHT", "1")
    monkeypatch.setenv("CHATCHAT_HYBRID_KEYWORD_WEIGHT", "0")
    reload_settings()
    assert sources(query, "hybrid", top_k=3) == vector_order
    assert keyword_order != vector_order  # the two weightings really do differ here


def test_traditional_and_simplified_chinese_find_each_other(zh_kb):
    assert sources("台湾的铁路电气化", "keyword")[0] == "traditional.txt"  # Simplified query, Traditional text
    assert sources("龍井茶產自哪裡", "keyword")[0] == "tea.txt"  # Traditional query, Simplified text


def keyword_sources(kb, query):
    return sources(query, "keyword", top_k=10, kb=kb)


def test_the_keyword_index_follows_deletes_updates_and_re_ingestion(zh_kb, kb_root):
    service.delete_files("zh", ["panda.txt"])
    assert "panda.txt" not in keyword_sources("zh", "大熊猫")
    (chunk,) = service.list_docs("zh", "tea.txt")
    assert service.update_docs_by_id("zh", {chunk.doc_id: Document("碧螺春产自苏州太湖洞庭山。", metadata={})})
    assert "tea.txt" not in keyword_sources("zh", "龙井茶")
    assert keyword_sources("zh", "碧螺春") == ["tea.txt"]
    paths.file_path("zh", "rail.txt").write_text("青藏铁路是世界上海拔最高的高原铁路。", encoding="utf-8")
    service.ingest_files("zh", ["rail.txt"])
    assert keyword_sources("zh", "京沪") == [] and keyword_sources("zh", "青藏") == ["rail.txt"]
    # What was saved is what is searched: a fresh load agrees with memory.
    get_store_cache.cache_clear()
    assert keyword_sources("zh", "碧螺春") == ["tea.txt"] and keyword_sources("zh", "大熊猫") == []


def test_a_store_saved_without_a_keyword_index_gains_one_without_embedding_again(zh_kb, monkeypatch):
    from server.knowledge_base.embeddings import get_embeddings

    kb = service.get_kb("zh")
    folder = paths.vector_store_path("zh", kb.embed_model)
    get_store_cache.cache_clear()
    with closing(sqlite3.connect(folder / "store.sqlite")) as db, db:  # as saved by another tokenizer version
        db.execute("UPDATE chunks SET terms = NULL")
        db.execute("UPDATE meta SET value = 0 WHERE key = 'tokenizer'")
    generation = int((folder / "CURRENT").read_text())
    backend = get_embeddings(kb.embed_model)
    embedded = []
    original = backend.embed
    monkeypatch.setattr(backend, "embed", lambda texts, **kw: embedded.append(len(texts)) or original(texts, **kw))
    assert sources("大熊猫吃什么？", "keyword")[0] == "panda.txt"
    assert embedded == [1]  # the query only: no chunk was embedded again
    assert int((folder / "CURRENT").read_text()) == generation + 1  # the rebuilt terms were saved once
    with closing(sqlite3.connect(folder / "store.sqlite")) as db:
        assert db.execute("SELECT count(*) FROM chunks WHERE terms IS NULL").fetchone() == (0,)
        assert db.execute("SELECT value FROM meta WHERE key = 'tokenizer'").fetchone() == (TOKENIZER_VERSION,)


def test_file_chat_temp_stores_search_by_keyword_too(kb_root):
    from server.knowledge_base.temp_stores import TempStoreRegistry

    registry = TempStoreRegistry(2, 60)
    files = [(name, text.encode("utf-8")) for name, text in PASSAGES.items()]
    temp_id, failed = registry.add_files(files, service.default_chunking())
    assert failed == {}
    hits = registry.search(temp_id, "大熊猫吃什么？", 3, 1.0)
    assert hits[0].chunk.metadata["source"] == "panda.txt" and hits[0].details["search_mode"] == "hybrid"
    vector_only = registry.search(temp_id, "大熊猫吃什么？", 3, 1.0, "vector")
    assert "panda.txt" not in [hit.chunk.metadata["source"] for hit in vector_only]


def test_search_options_pool_covers_the_reranker_candidates():
    options = SearchOptions("hybrid", True, 50, 1.0, 1.0, 20)
    assert options.pool_size(3) == 20 and options.pool_size(30) == 30
    assert SearchOptions("hybrid", False, 50, 1.0, 1.0, 20).pool_size(3) == 3
