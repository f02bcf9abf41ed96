"""A deleted knowledge base stays deleted: work still running on it stops at its next write, and a new
knowledge base of the same name starts empty (issue 10, item 5)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from server.db.engine import create_tables, get_engine
from server.db.repositories import knowledge_base as kb_repo
from server.db.repositories import knowledge_file as file_repo
from server.knowledge_base import paths, service

PARAGRAPH = "Section {i}. The rebuild reads this file and embeds its text before storing it.\n\n"


def add_files(kb_root, kb_name: str, count: int) -> list[str]:
    names = []
    for i in range(count):
        path = kb_root / kb_name / "content" / f"doc{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PARAGRAPH.format(i=i) * 20, encoding="utf-8")
        names.append(path.name)
    return names


def rebuild_paused_after_first_file(kb_name: str):
    """Start recreate_vector_store in a thread that pauses once its first file is parsed (holding no lock).

    Returns (paused, resume, finished, outcome): outcome["error"] is what the rebuild raised, if anything."""
    paused, resume, finished = threading.Event(), threading.Event(), threading.Event()
    outcome: dict = {}

    def progress(kind: str, _item) -> None:
        if kind == "parsed" and not paused.is_set():
            paused.set()
            resume.wait(60)

    def run() -> None:
        try:
            outcome["report"] = service.recreate_vector_store(kb_name, progress=progress, workers=0)
        except Exception as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert paused.wait(120), "the rebuild never parsed a file"
    return resume, finished, outcome


def store_size(kb_name: str) -> int:
    return len(service.search(kb_name, "rebuild embeds text", top_k=100, score_threshold=2.0))


@pytest.fixture
def filled_kb(kb_root):
    service.create_kb("busy")
    names = add_files(kb_root, "busy", 6)
    assert service.ingest_files("busy", names).failed == {}
    return kb_root


def test_a_rebuild_of_a_deleted_knowledge_base_stops_and_brings_nothing_back(filled_kb):
    resume, finished, outcome = rebuild_paused_after_first_file("busy")
    service.delete_kb("busy")
    resume.set()
    assert finished.wait(120)

    assert isinstance(outcome.get("error"), service.KnowledgeBaseGone), outcome
    assert "deleted while this operation ran" in str(outcome["error"])
    assert not (filled_kb / "busy").exists(), "the rebuild wrote the deleted knowledge base's folder back"
    assert not service.kb_exists("busy")
    assert file_repo.list_file_names("busy") == []
    assert file_repo.list_errors("busy") == {}


def test_a_new_knowledge_base_of_the_same_name_gets_nothing_from_the_old_ones_rebuild(filled_kb):
    resume, finished, outcome = rebuild_paused_after_first_file("busy")
    service.delete_kb("busy")
    service.create_kb("busy")  # same name, new epoch (SQLite may even reuse the row id)
    resume.set()
    assert finished.wait(120)

    assert isinstance(outcome.get("error"), service.KnowledgeBaseGone), outcome
    assert service.list_files("busy") == []
    assert store_size("busy") == 0
    # ...and the new one works normally.
    names = add_files(filled_kb, "busy", 1)
    assert service.ingest_files("busy", names).failed == {}
    assert service.list_files("busy") == names
    assert store_size("busy") > 0


def test_work_that_read_the_knowledge_base_before_a_delete_and_create_writes_nothing(filled_kb):
    old = service.get_kb("busy")
    service.delete_kb("busy")
    service.create_kb("busy")
    with pytest.raises(service.KnowledgeBaseGone):
        with service.writing_to(old):
            pass
    with service.writing_to(service.get_kb("busy")) as current:
        assert current.epoch != old.epoch


def test_a_new_knowledge_base_discards_vectors_and_rows_left_without_one(filled_kb):
    # What the old bug left behind: the folder with its vector store and file rows, but no knowledge base row.
    kb_repo.delete_kb_row("busy")
    assert file_repo.list_file_names("busy")
    assert paths.vector_store_path("busy", service.get_settings().EMBEDDING_MODEL).exists()

    service.create_kb("busy")
    assert service.list_files("busy") == []
    assert store_size("busy") == 0
    assert sorted(paths.list_content_files("busy")) == [f"doc{i}.md" for i in range(6)]  # the user's files stay


def test_delete_works_while_nothing_runs_and_the_lock_file_lives_outside_the_folder(filled_kb):
    service.delete_kb("busy")
    assert not (filled_kb / "busy").exists()
    assert paths.list_kb_folders() == []  # the lock folder is not taken for a knowledge base
    with pytest.raises(service.KnowledgeBaseNotFound):
        service.delete_kb("busy")


def test_knowledge_bases_from_older_databases_get_an_epoch_on_upgrade(kb_root):
    service.create_kb("old")
    with get_engine().begin() as connection:
        connection.execute(text("UPDATE knowledge_base SET epoch = NULL"))
    assert service.get_kb("old").epoch == ""
    create_tables()
    epoch = service.get_kb("old").epoch
    assert len(epoch) == 32
    create_tables()  # and keep it afterwards
    assert service.get_kb("old").epoch == epoch
