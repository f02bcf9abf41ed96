"""Moving a knowledge base between stores (init_database.py --migrate-kb) keeps every chunk, id and
score: FAISS -> Milvus Lite -> PostgreSQL/pgvector -> FAISS, nothing embedded again."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

import init_database
from server.knowledge_base import service
from server.knowledge_base.search import SEARCH_MODES
from tests.knowledge_base.test_service import GUIDE, ingest_demo, write
from tests.knowledge_base.vector_stores.conftest import use_pg
from tests.knowledge_base.vector_stores.test_store_suite import QUERIES
from tests.helpers.processes import free_port


def results():
    found = {}
    for query in QUERIES:
        for mode in SEARCH_MODES:
            hits = service.search("demo", query, top_k=4, mode=mode)
            found[query, mode] = [
                (h.chunk.doc_id, h.chunk.page_content, round(h.score, 5), round(h.details.get("keyword_score", 0.0), 4))
                for h in hits
            ]
    return found


def test_faiss_to_milvus_to_pg_and_back_keeps_ids_and_results(close_stores, pg_database, monkeypatch, kb_root, capsys):
    use_pg(monkeypatch, pg_database)
    ingest_demo(kb_root, "faiss")
    expected = results()
    rows = [c.doc_id for c in service.list_docs("demo")]
    for target in ("milvus", "pg", "faiss"):
        assert init_database.main(["--migrate-kb", "demo", "--to", target]) == 0
        assert "moved to " + target in capsys.readouterr().out
        assert service.get_kb("demo").vs_type == target
        assert results() == expected, target
        assert [c.doc_id for c in service.list_docs("demo")] == rows
    assert service.update_docs_by_id("demo", {rows[0]: Document("Penguins live in Antarctica.")})
    assert service.search("demo", "penguins antarctica", top_k=1, mode="keyword")[0].chunk.doc_id == rows[0]


def test_a_failed_migration_leaves_the_knowledge_base_where_it_was(close_stores, monkeypatch, kb_root, capsys):
    service.create_kb("demo", "faiss")
    service.ingest_files("demo", [write(kb_root, "demo", "guide.md", GUIDE)])
    before = results()
    use_pg(monkeypatch, f"postgresql://u:p@127.0.0.1:{free_port()}/none")
    assert init_database.main(["--migrate-kb", "demo", "--to", "pg"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot connect to PostgreSQL") and "\n" not in error
    assert service.get_kb("demo").vs_type == "faiss"
    assert results() == before
    with pytest.raises(ValueError, match="already uses faiss"):
        init_database.main(["--migrate-kb", "demo", "--to", "faiss"])
