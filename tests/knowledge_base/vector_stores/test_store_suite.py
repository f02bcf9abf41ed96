"""The knowledge-base service on every store type: one suite, parametrised (faiss, milvus, pg).

Milvus is Milvus Lite in the knowledge base's folder; pg is a real PostgreSQL with pgvector
(conftest.py). The default embedding model is real.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from langchain_core.documents import Document

from configs import get_settings
from server.knowledge_base import paths, service
from server.knowledge_base.embeddings import get_embeddings
from server.knowledge_base.search import SEARCH_MODES, SearchOptions, prepare_query, rank_candidates
from server.knowledge_base.vector_stores import (
    FaissStore,
    StoreSettingsError,
    StoreUnavailable,
    VectorStoreCache,
    open_remote_store,
)
from tests.conftest import REPO_ROOT
from tests.knowledge_base.test_service import GUIDE, ingest_demo, write
from tests.knowledge_base.vector_stores.conftest import use_pg

QUERIES = ["Which port does the web interface use?", "how many legs has a spider", "分块大小是多少", "pip requirements"]


@pytest.fixture
def demo(vs_type, kb_root):
    return ingest_demo(kb_root, vs_type)


def all_chunks(kb_name="demo"):
    return service.search(kb_name, "anything", top_k=100, mode="vector")


def read_demo(use):
    kb = service.get_kb("demo")
    return service._read_store(kb, get_embeddings(kb.embed_model), use)


def test_every_mode_finds_the_chunk_that_answers(demo, vs_type):
    assert service.get_kb("demo").vs_type == vs_type
    for mode in SEARCH_MODES:
        assert service.search("demo", QUERIES[0], top_k=1, mode=mode)[0].chunk.metadata["source"] == "guide.md"
        assert service.search("demo", QUERIES[1], top_k=1, mode=mode)[0].chunk.metadata == {
            "source": "tables/faq.csv",
            "row": 2,
        }
    assert service.search("demo", QUERIES[2], top_k=1, mode="keyword")[0].chunk.metadata["source"] == "zh.txt"
    hits = service.search("demo", "port", top_k=10, mode="vector")
    assert len(hits) == demo.chunks
    assert [h.score for h in hits] == sorted(h.score for h in hits)
    assert service.search("demo", "port", top_k=10, score_threshold=0.0) == []


def test_scores_and_order_are_those_of_faiss_over_the_same_vectors(demo):
    """Copy the store, vectors and all, into FAISS: every mode must rank and score alike."""
    dimension = get_embeddings(service.get_kb("demo").embed_model).dimension
    reference = FaissStore(dimension)
    for chunks, vectors in read_demo(lambda store: list(store.export(batch_size=2))):
        reference.add([type(c)(c.doc_id, c.page_content, dict(c.metadata)) for c in chunks], vectors)
    assert len(reference) == demo.chunks
    backend = get_embeddings(service.get_kb("demo").embed_model)
    for query in QUERIES:
        prepared = prepare_query(query, lambda text: backend.embed([text], is_query=True)[0])
        for mode in SEARCH_MODES:
            options = SearchOptions.from_settings(mode, rerank=False)
            got = read_demo(lambda store, p=prepared, o=options: rank_candidates(store, p, 5, 1.0, o))
            expected = rank_candidates(reference, prepared, 5, 1.0, options)
            assert [h.chunk.doc_id for h in got] == [h.chunk.doc_id for h in expected], (query, mode)
            assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)
            for mine, theirs in zip(got, expected, strict=True):
                assert mine.details.get("keyword_score") == pytest.approx(theirs.details.get("keyword_score"), abs=1e-5)


def test_list_update_reingest_delete_and_custom_docs(demo, kb_root):
    faq = service.list_docs("demo", file_name="tables/faq.csv")
    assert [c.metadata["row"] for c in faq] == [1, 2]
    assert service.update_docs_by_id("demo", {faq[0].doc_id: Document("Bananas are yellow.", metadata={"row": 9})})
    assert service.get_chunks("demo", [faq[0].doc_id])[0].metadata == {"row": 9, "source": "tables/faq.csv"}
    top = service.search("demo", "banana yellow", top_k=1, mode="keyword")[0]
    assert (top.chunk.doc_id, top.chunk.page_content) == (faq[0].doc_id, "Bananas are yellow.")
    assert service.update_docs_by_id("demo", {"no-such-id": Document("x")}) is False

    before = {h.chunk.doc_id for h in all_chunks()}
    report = service.ingest_files("demo", ["guide.md"])  # re-ingesting replaces, never duplicates
    after = {h.chunk.doc_id for h in all_chunks()}
    assert len(after) == demo.chunks and report.failed == {}
    replaced = before - after  # the guide's chunks got new ids; the old ones are gone
    assert replaced and service.get_chunks("demo", list(replaced)) == []

    assert service.delete_files("demo", ["zh.txt"]) == {}
    assert all(h.chunk.metadata["source"] != "zh.txt" for h in all_chunks())
    assert service.search("demo", QUERIES[2], top_k=3, mode="keyword") == []
    assert sorted(service.list_files("demo")) == ["guide.md", "tables/faq.csv"]

    count = service.add_custom_docs("demo", "notes.txt", [Document("Custom chunk about the moon.", metadata={"a": 1})])
    assert count == 1
    assert service.list_docs("demo", file_name="notes.txt")[0].metadata == {"a": 1, "source": "notes.txt"}


def test_recreate_and_delete_kb_leave_nothing_behind(demo, vs_type, kb_root):
    report = service.recreate_vector_store("demo")
    assert report.failed == {} and report.chunks == demo.chunks == len(all_chunks())
    service.delete_kb("demo")
    assert not paths.kb_path("demo").exists()
    if vs_type == "pg":
        with psycopg.connect(get_settings().KBS_CONFIG.pg.connection_uri) as connection:
            tables = connection.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'chatkb_%%' "
                "AND tablename NOT IN ('chatkb_markers', 'chatkb_changes')"
            )
            assert tables.fetchone()[0] == 0
            assert connection.execute("SELECT count(*) FROM chatkb_changes").fetchone()[0] == 0
    service.create_kb("demo", vs_type)  # the same name starts empty
    assert all_chunks() == []


def test_a_change_made_elsewhere_is_seen_at_once(demo, kb_root):
    """Another process (here: another cache, as a second API server has) adds a file: the first
    cache's next search finds it, by keyword too."""
    kb = service.get_kb("demo")
    backend = get_embeddings(kb.embed_model)
    key, folder = service._store_key("demo", kb.embed_model)
    service.search("demo", "port", mode="hybrid")  # the first cache holds the store now
    other = VectorStoreCache(1, open_remote_store)
    text = "Zebras graze on the savanna."
    from server.knowledge_base.vector_stores import StoredChunk

    with other.write(key, folder, backend.dimension, vs_type=kb.vs_type) as store:
        store.add([StoredChunk("", text, {"source": "zebra.txt"})], backend.embed([text]))
    other.close()
    top = service.search("demo", "zebras savanna", top_k=1, mode="keyword")
    assert [h.chunk.page_content for h in top] == [text]


# ---- PostgreSQL: failures ---------------------------------------------------------------------------


def test_pg_connection_lost_mid_write_is_a_clear_error_and_writes_nothing(
    close_stores, pg_database, monkeypatch, kb_root
):
    use_pg(monkeypatch, pg_database)
    service.create_kb("demo", "pg")
    service.ingest_files("demo", [write(kb_root, "demo", "guide.md", GUIDE)])
    before = [(h.chunk.doc_id, h.chunk.page_content) for h in all_chunks()]
    rows_before = service.list_docs("demo", "guide.md")

    def add_then_lose_the_server(store):
        store.delete(store.ids_for_source("guide.md"))
        store.add(
            [service.StoredChunk("", "half written", {"source": "guide.md"})],
            get_embeddings(service.get_kb("demo").embed_model).embed(["x"]),
        )
        with psycopg.connect(pg_database, autocommit=True) as admin:  # the server ends this store's session
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    kb = service.get_kb("demo")
    with pytest.raises(StoreUnavailable) as caught:
        service._write_store(kb, get_embeddings(kb.embed_model), add_then_lose_the_server)
    message = str(caught.value)
    assert "\n" not in message and "PostgreSQL" in message
    assert [(h.chunk.doc_id, h.chunk.page_content) for h in all_chunks()] == before  # reconnects; nothing half-written
    assert service.list_docs("demo", "guide.md") == rows_before


def test_wrong_connection_settings_are_one_line_errors(close_stores, monkeypatch, tmp_path):
    from tests.helpers.processes import free_port

    def opening(vs_type):
        with pytest.raises((StoreSettingsError, StoreUnavailable)) as caught:
            open_remote_store(vs_type, ("kb", "model"), tmp_path, 4)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    port = free_port()
    use_pg(monkeypatch, f"postgresql://user:s3cret@127.0.0.1:{port}/db")
    message = opening("pg")
    assert f"127.0.0.1:{port}" in message and "s3cret" not in message and "connection_uri" in message
    use_pg(monkeypatch, "")
    assert "KBS_CONFIG.pg.connection_uri" in opening("pg")
    assert "KBS_CONFIG.zilliz" in opening("zilliz")
    monkeypatch.setenv("CHATCHAT_KBS_CONFIG__MILVUS__URI", f"http://127.0.0.1:{port}")
    use_pg(monkeypatch, "")
    assert f"127.0.0.1:{port}" in opening("milvus")
    with pytest.raises(ValueError, match="unsupported vector store type"):
        service.create_kb("nope", "chroma")


def test_startup_refuses_a_store_server_it_cannot_reach_in_one_line(tmp_path):
    from tests.helpers.processes import free_port

    port = free_port()
    env = {
        **os.environ,
        "CHATCHAT_KB_ROOT_PATH": str(tmp_path),
        "CHATCHAT_API_SERVER__PORT": str(free_port()),
        "CHATCHAT_KBS_CONFIG__PG__CONNECTION_URI": f"postgresql://u:s3cret@127.0.0.1:{port}/kb",
    }
    done = subprocess.run(
        [sys.executable, "startup.py", "--api"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    error = done.stderr.strip()
    assert error.startswith(f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}/kb") and "\n" not in error
    assert "s3cret" not in error


def test_a_deleted_milvus_lite_knowledge_base_stays_deleted(close_stores, kb_root):
    """Milvus Lite runs in this process and writes its file out when its server stops (at exit at the
    latest): after delete_kb nothing of the knowledge base may come back then."""
    from milvus_lite.server_manager import server_manager_instance

    ingest_demo(kb_root, "milvus")
    service.delete_kb("demo")
    server_manager_instance.release_all()  # what happens at exit
    assert not paths.kb_path("demo").exists()
