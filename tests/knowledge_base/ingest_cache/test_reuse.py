"""Rebuilds, re-uploads and file chat reuse the ingest cache, and give what a cold build gives.

Real files, the real default embedding model, the real SQLite cache under the test's KB root.
"""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from configs import reload_settings
from server.knowledge_base import paths, service
from server.knowledge_base.ingest_cache import get_ingest_cache
from server.knowledge_base.temp_stores import TempStoreRegistry

REPEATED = "All depots share one rule: trucks are weighed before they leave the yard. 所有仓库都有同一条规则。"
FILES = {
    "depots.md": "# Depots\n\nThe north depot opens at six and closes at ten.\n\n"
    + REPEATED
    + "\n\n## Staff\n\nEach depot has a manager and two forklift drivers. 每个仓库有一名经理。",
    "rules.txt": REPEATED + "\n\nHelmets are required in every loading bay, day and night.",
    "notes/zh.md": "# 说明\n\n本系统默认的文本分块大小是二百五十个字符，重叠部分是五十个字符。\n\n" + REPEATED,
}
QUERIES = ["when does the north depot open", "helmets", "分块大小是多少", "trucks weighed"]


@pytest.fixture
def kb(kb_root):
    service.create_kb("cache_kb")
    for name, text in FILES.items():
        path = paths.content_path("cache_kb") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return "cache_kb"


def entries(kb_root) -> dict[str, int]:
    with sqlite3.connect(kb_root / "ingest_cache.db") as db:
        rows = db.execute("SELECT substr(key, 1, instr(key, ':') - 1), count(*) FROM entries GROUP BY 1")
        return dict(rows.fetchall())


def snapshot(kb_name: str):
    """What a user sees: every file's chunks (text, metadata) and the search results (rounded scores)."""
    chunks = {name: [(c.page_content, c.metadata) for c in service.list_docs(kb_name, name)] for name in FILES}
    results = [
        [(h.chunk.page_content, h.chunk.metadata["source"], round(h.score, 4)) for h in service.search(kb_name, q, 3)]
        for q in QUERIES
    ]
    return chunks, results


def cold_build(kb_root, monkeypatch, options) -> tuple:
    """The same files built with the cache switched off, in another knowledge base."""
    monkeypatch.setenv("CHATCHAT_INGEST_CACHE_ENABLED", "false")
    reload_settings()
    service.create_kb("cold_kb")
    for name in FILES:
        target = paths.content_path("cold_kb") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((paths.content_path("cache_kb") / name).read_bytes())
    report = service.recreate_vector_store("cold_kb", options)
    assert report.cached_chunks == 0
    monkeypatch.delenv("CHATCHAT_INGEST_CACHE_ENABLED")
    reload_settings()
    return snapshot("cold_kb")


def test_a_warm_rebuild_parses_and_embeds_nothing_and_matches_a_cold_one(kb, kb_root, monkeypatch):
    cold = service.recreate_vector_store(kb)
    assert cold.cached_chunks == 0 and cold.chunks > 0
    first = snapshot(kb)
    warm = service.recreate_vector_store(kb)
    assert warm.chunks == cold.chunks
    assert warm.load_seconds == 0.0 and warm.model_seconds == 0.0  # nothing read, nothing embedded
    assert warm.cached_chunks + warm.reused_chunks == warm.chunks
    assert snapshot(kb) == first
    assert cold_build(kb_root, monkeypatch, service.default_chunking()) == first


def test_a_new_chunk_size_reuses_the_parsed_documents_only(kb, kb_root, monkeypatch):
    service.recreate_vector_store(kb)
    before = entries(kb_root)
    options = service.default_chunking(chunk_size=60, chunk_overlap=10)
    report = service.recreate_vector_store(kb, options)
    after = entries(kb_root)
    assert after["docs"] == before["docs"] == len(FILES)  # documents hit: no new entries
    assert after["chunks"] == 2 * len(FILES)  # chunks missed
    assert after["vec"] > before["vec"] and report.model_seconds > 0
    assert snapshot(kb) == cold_build(kb_root, monkeypatch, options)


def test_another_splitter_or_ocr_setting_misses_what_it_changes(kb, kb_root):
    service.recreate_vector_store(kb)
    base = service.default_chunking()
    service.recreate_vector_store(kb, dataclasses.replace(base, splitter_name="RecursiveCharacterTextSplitter"))
    assert entries(kb_root)["docs"] == len(FILES) and entries(kb_root)["chunks"] == 2 * len(FILES)
    service.recreate_vector_store(kb, dataclasses.replace(base, ocr=False))
    assert entries(kb_root)["docs"] == 2 * len(FILES) and entries(kb_root)["chunks"] == 3 * len(FILES)


def test_another_model_does_not_get_the_first_ones_vectors(kb, kb_root, monkeypatch):
    from server.knowledge_base.embeddings.local import packaged_model_path

    service.recreate_vector_store(kb)
    vectors = entries(kb_root)["vec"]
    # Same files under another name: a different model as far as the cache can tell.
    monkeypatch.setenv("CHATCHAT_EMBEDDING_MODEL_PATHS", f'{{"minilm-copy": "{packaged_model_path("all-MiniLM-L6-v2")}"}}')
    reload_settings()
    report = service.recreate_vector_store(kb, embed_model="minilm-copy")
    assert report.cached_chunks == 0
    assert entries(kb_root)["vec"] == 2 * vectors


def test_corrupted_vectors_are_ignored_and_rebuilt(kb, kb_root):
    service.recreate_vector_store(kb)
    first = snapshot(kb)
    get_ingest_cache().close()
    with sqlite3.connect(kb_root / "ingest_cache.db") as db:
        db.execute("UPDATE entries SET value = substr(value, 1, 100) WHERE key LIKE 'vec:%'")
        db.execute("UPDATE entries SET value = X'00' || substr(value, 2) WHERE key LIKE 'chunks:%'")
    report = service.recreate_vector_store(kb)
    assert report.cached_chunks == 0 and report.model_seconds > 0
    assert snapshot(kb) == first
    again = service.recreate_vector_store(kb)  # the rebuilt entries are whole again
    assert again.model_seconds == 0.0 and again.load_seconds == 0.0


def test_file_chat_on_an_ingested_file_embeds_nothing(kb, kb_root):
    service.recreate_vector_store(kb)
    vectors = entries(kb_root)["vec"]
    cache = get_ingest_cache()
    hits = cache.hits
    data = (paths.content_path(kb) / "depots.md").read_bytes()
    temp_id, failed = TempStoreRegistry(2, 60).add_files([("upload.md", data)], service.default_chunking())
    assert failed == {} and temp_id
    assert entries(kb_root)["vec"] == vectors
    assert cache.hits - hits >= 2  # its chunks (one entry) and their vectors


def test_the_same_content_under_another_name_is_ingested_once(kb, kb_root):
    service.recreate_vector_store(kb)
    (paths.content_path(kb) / "copy-of-rules.txt").write_bytes((paths.content_path(kb) / "rules.txt").read_bytes())
    report = service.ingest_files(kb, ["copy-of-rules.txt"])
    assert report.duplicates == {"copy-of-rules.txt": "rules.txt"} and report.failed == {}
    assert "copy-of-rules.txt" not in service.list_files(kb)
    hits = service.search(kb, "helmets in loading bays", top_k=10)
    assert "copy-of-rules.txt" not in {h.chunk.metadata["source"] for h in hits}
    details = {row["file_name"]: row for row in service.file_details(kb)}
    assert "rules.txt" in details["copy-of-rules.txt"]["error"]
    rebuilt = service.recreate_vector_store(kb)  # a rebuild keeps the first copy only
    assert rebuilt.duplicates == {"copy-of-rules.txt": "rules.txt"}


def test_a_renamed_copy_in_another_knowledge_base_is_neither_parsed_nor_embedded_again(kb, kb_root):
    service.recreate_vector_store(kb)
    service.create_kb("other_kb")
    (paths.content_path("other_kb") / "renamed.md").write_bytes((paths.content_path(kb) / "depots.md").read_bytes())
    report = service.ingest_files("other_kb", ["renamed.md"])
    assert report.failed == {} and report.chunks > 0
    assert report.load_seconds == 0.0 and report.model_seconds == 0.0
    original = [(c.page_content, {**c.metadata, "source": "renamed.md"}) for c in service.list_docs(kb, "depots.md")]
    assert [(c.page_content, c.metadata) for c in service.list_docs("other_kb", "renamed.md")] == original
