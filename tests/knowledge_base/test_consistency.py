"""Check and repair on a knowledge base that each test damages in one of the ways drift happens."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing

import numpy as np
import pytest
from sqlalchemy import text

from server.db.engine import get_engine
from server.db.repositories import knowledge_base as kb_repo
from server.db.repositories import knowledge_file as file_repo
from server.knowledge_base import consistency, paths, service
from server.knowledge_base.embeddings import get_embeddings
from server.knowledge_base.vector_stores import StoredChunk, get_store_cache
from tests.conftest import REPO_ROOT
from tests.knowledge_base.vector_stores.conftest import (  # noqa: F401 (fixtures: each store type in turn)
    close_stores,
    pg_database,
    pg_server,
    pg_server_handle,
    vs_type,
)

KB = "drift"
FILES = {
    "a.md": "# Otters\n\nOtters hold hands while they sleep so they do not drift apart.",
    "b.md": "# Herons\n\nA heron stands still in shallow water and waits for fish.",
    "notes/c.txt": "Badgers dig setts with many tunnels and chambers under woodland.",
}


def _make_kb(vs_type_name: str = "faiss"):
    service.create_kb(KB, vs_type_name)
    for name, body in FILES.items():
        path = paths.content_path(KB) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    assert service.ingest_files(KB, list(FILES)).failed == {}
    assert consistency.check_kb(KB).ok
    return service.get_kb(KB)


@pytest.fixture
def kb(kb_root):
    """The damaged knowledge base on FAISS (for what only FAISS has: its files, its keyword terms)."""
    return _make_kb()


@pytest.fixture
def any_kb(vs_type):  # noqa: F811
    """The same on each store type in turn: faiss, Milvus Lite, PostgreSQL/pgvector."""
    return _make_kb(vs_type)


def change_store(kb, change):
    return service._write_store(kb, get_embeddings(kb.embed_model), change, force_save=True)


def kinds(report) -> dict[str, str]:
    return {problem.kind: problem.file_name for problem in report.problems}


def found(query: str, mode: str = "vector") -> list[str]:
    return [hit.chunk.metadata["source"] for hit in service.search(KB, query, top_k=3, score_threshold=2.0, mode=mode)]


def repair_and_expect_clean(expected_kind: str):
    report = consistency.repair_kb(KB)
    assert expected_kind in kinds(report), report.to_dict()
    assert report.remaining == [], report.to_dict()
    assert consistency.check_kb(KB).ok
    return report


def test_orphan_chunks_of_no_file_are_removed(any_kb):
    kb = any_kb
    vector = get_embeddings(kb.embed_model).embed(["ghost chunk about lighthouses"])
    change_store(
        kb, lambda store: store.add([StoredChunk("", "ghost chunk about lighthouses", {"source": "ghost.md"})], vector)
    )
    assert kinds(consistency.check_kb(KB)) == {"orphan_chunks": "ghost.md"}
    repair_and_expect_clean("orphan_chunks")
    assert "ghost.md" not in found("lighthouses")


def test_chunks_of_an_unlisted_file_are_adopted_without_embedding_again(any_kb):
    stored_ids = [chunk.doc_id for chunk in service.list_docs(KB, "b.md")]
    file_repo.delete_files(KB, ["b.md"])  # rows lost, vectors kept: a crash between store save and commit
    report = consistency.check_kb(KB)
    assert kinds(report) == {"orphan_chunks": "b.md"}
    assert report.problems[0].action == "adopt"
    repair_and_expect_clean("orphan_chunks")
    assert [chunk.doc_id for chunk in service.list_docs(KB, "b.md")] == stored_ids  # the same vectors, adopted
    assert file_repo.get_file(KB, "b.md").document_loader_name == consistency.ADOPTED
    assert found("heron waiting for fish")[0] == "b.md"


def test_missing_chunks_are_embedded_again_from_the_file(any_kb):
    kb = any_kb
    change_store(kb, lambda store: store.delete(store.ids_for_source("a.md")))
    assert kinds(consistency.check_kb(KB)) == {"missing_chunks": "a.md"}
    assert found("otters sleeping")[0] != "a.md"
    repair_and_expect_clean("missing_chunks")
    assert found("otters sleeping")[0] == "a.md"


def test_files_gone_from_disk_are_forgotten_with_their_chunks(any_kb):
    (paths.content_path(KB) / "notes/c.txt").unlink()
    assert kinds(consistency.check_kb(KB)) == {"file_not_on_disk": "notes/c.txt"}
    repair_and_expect_clean("file_not_on_disk")
    assert "notes/c.txt" not in service.list_files(KB)
    assert "notes/c.txt" not in found("badger tunnels")


def test_files_on_disk_that_the_database_does_not_know_are_ingested(any_kb):
    (paths.content_path(KB) / "d.md").write_text("Lynxes have tufted ears and hunt hares in snow.", encoding="utf-8")
    assert kinds(consistency.check_kb(KB)) == {"file_not_listed": "d.md"}
    repair_and_expect_clean("file_not_listed")
    assert "d.md" in service.list_files(KB)
    assert found("tufted ears")[0] == "d.md"


def test_a_stale_keyword_index_is_rebuilt_from_the_stored_texts(kb):
    folder = paths.vector_store_path(KB, kb.embed_model)
    get_store_cache.cache_clear()  # what a later process loads from disk
    with closing(sqlite3.connect(folder / "store.sqlite")) as db, db:  # the terms the FAISS store saved
        db.execute("UPDATE chunks SET terms = '{\"unrelated\": 1, \"terms\": 1}' WHERE source = 'a.md'")
    assert kinds(consistency.check_kb(KB)) == {"keyword_index_stale": ""}
    assert "a.md" not in found("otters hold hands", mode="keyword")
    repair_and_expect_clean("keyword_index_stale")
    get_store_cache.cache_clear()
    assert found("otters hold hands", mode="keyword")[0] == "a.md"


def test_wrong_counts_are_recounted(any_kb):
    with get_engine().begin() as connection:
        connection.execute(text("UPDATE knowledge_file SET docs_count = 99 WHERE file_name = 'a.md'"))
        connection.execute(text("UPDATE knowledge_base SET file_count = 7"))
    assert set(kinds(consistency.check_kb(KB))) == {"counts_wrong"}
    repair_and_expect_clean("counts_wrong")
    assert file_repo.get_file(KB, "a.md").docs_count == len(service.list_docs(KB, "a.md"))
    assert service.get_kb(KB).file_count == 3


def test_a_folder_the_database_lost_is_registered_and_its_vectors_adopted(kb):
    stored_ids = {chunk.doc_id for name in FILES for chunk in service.list_docs(KB, name)}
    file_repo.delete_all_files(KB)
    kb_repo.delete_kb_row(KB)
    get_store_cache.cache_clear()
    assert [report.kb_name for report in consistency.check_all() if not report.ok] == [KB]
    report = consistency.repair_kb(KB)
    assert {"kb_not_listed", "orphan_chunks"} <= set(kinds(report))
    assert report.remaining == []
    assert sorted(service.list_files(KB)) == sorted(FILES)
    assert {chunk.doc_id for name in FILES for chunk in service.list_docs(KB, name)} == stored_ids


def test_an_unreadable_store_is_rebuilt_from_content(kb):
    folder = paths.vector_store_path(KB, kb.embed_model)
    get_store_cache.cache_clear()
    for path in folder.glob("store.sqlite*"):
        path.write_bytes(b"broken" * 1000)
    report = consistency.check_kb(KB)
    assert kinds(report) == {"store_unreadable": ""}
    assert "cannot be read" in report.problems[0].detail
    repair_and_expect_clean("store_unreadable")
    assert found("badger tunnels")[0] == "notes/c.txt"


def test_custom_docs_without_a_file_are_not_reported(any_kb):
    from langchain_core.documents import Document

    service.add_custom_docs(KB, "FAQ.MD", [Document("Ravens can mimic human speech.")])
    assert consistency.check_kb(KB).ok


def test_the_command_line_reports_then_repairs(kb, kb_root):
    (paths.content_path(KB) / "notes/c.txt").unlink()
    vector = np.asarray(get_embeddings(kb.embed_model).embed(["stray"]))
    change_store(kb, lambda store: store.add([StoredChunk("", "stray", {"source": "stray.md"})], vector))
    env = {"CHATCHAT_KB_ROOT_PATH": str(kb_root), "PATH": "/usr/bin:/bin", "HOME": str(kb_root)}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "init_database.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    checked = run("--check", "--json")
    assert checked.returncode == 1, checked.stderr
    problems = {p["kind"]: p["file_name"] for p in json.loads(checked.stdout)[0]["problems"]}
    assert problems == {"file_not_on_disk": "notes/c.txt", "orphan_chunks": "stray.md"}
    repaired = run("--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "file_not_on_disk" in repaired.stdout
    assert run("--check").returncode == 0
