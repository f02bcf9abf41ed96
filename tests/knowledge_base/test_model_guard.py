"""The embedding-model drift guard, with a real model whose weights really change under its name."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from configs import reload_settings
from server.knowledge_base import embeddings, paths, service
from server.knowledge_base.embeddings.local import packaged_model_path
from server.knowledge_base.model_guard import EmbeddingModelChanged

MODEL = "drifting-model"


@pytest.fixture
def drifting_model(kb_root, tmp_path, monkeypatch):
    """A copy of the default model under its own name, whose weights the test can retrain."""
    folder = tmp_path / MODEL
    shutil.copytree(packaged_model_path("all-MiniLM-L6-v2"), folder)
    monkeypatch.setenv("CHATCHAT_EMBEDDING_MODEL_PATHS", json.dumps({MODEL: str(folder)}))
    reload_settings()
    yield folder
    embeddings.forget_embeddings(MODEL)


def retrain(folder) -> None:
    """Every weight moves a little, as fine-tuning does; the model still loads and embeds."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    save_file({name: tensor * 1.05 + 0.01 for name, tensor in weights.items()}, folder / "model.safetensors")
    embeddings.forget_embeddings(MODEL)  # as after a restart of the server


def build(kb_name: str) -> None:
    service.create_kb(kb_name, embed_model=MODEL)
    (paths.content_path(kb_name) / "guide.md").write_text("The depot opens at six in the morning.", encoding="utf-8")
    assert service.ingest_files(kb_name, ["guide.md"]).failed == {}


def test_a_knowledge_base_records_its_models_fingerprint(drifting_model, kb_root):
    build("fp_kb")
    stored = json.loads(service.get_kb("fp_kb").embed_fingerprint)
    assert stored["name"] == MODEL and stored["dimension"] == 384 and len(stored["weights"]) == 64


def test_changed_weights_are_refused_with_the_command_that_fixes_it(drifting_model, kb_root):
    build("drift_kb")
    assert service.search("drift_kb", "when does the depot open", top_k=1)
    retrain(drifting_model)
    with pytest.raises(EmbeddingModelChanged, match="init_database.py --recreate-vs --kb-name drift_kb"):
        service.search("drift_kb", "when does the depot open", top_k=1)
    (paths.content_path("drift_kb") / "more.md").write_text("Trucks are weighed on exit.", encoding="utf-8")
    with pytest.raises(EmbeddingModelChanged):
        service.ingest_files("drift_kb", ["more.md"])  # nothing of the new model is mixed in
    assert service.list_files("drift_kb") == ["guide.md"]

    report = service.recreate_vector_store("drift_kb")  # the fix
    assert report.ingested == 2 and report.cached_chunks == 0  # the old model's cached vectors are not used
    assert service.search("drift_kb", "when does the depot open", top_k=1)[0].chunk.metadata["source"] == "guide.md"


def test_a_copy_with_new_modification_times_is_the_same_model(drifting_model, kb_root):
    build("same_kb")
    weights = drifting_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # a reinstall: same bytes, new mtime
    embeddings.forget_embeddings(MODEL)
    assert service.search("same_kb", "depot", top_k=1)


def test_a_knowledge_base_from_before_the_guard_adopts_the_current_model(drifting_model, kb_root):
    build("old_kb")
    with sqlite3.connect(kb_root / "info.db") as db:
        db.execute("UPDATE knowledge_base SET embed_fingerprint = NULL WHERE kb_name = 'old_kb'")
    assert service.search("old_kb", "depot", top_k=1)
    assert json.loads(service.get_kb("old_kb").embed_fingerprint)["dimension"] == 384


def test_an_existing_database_gets_the_column_in_place(tmp_path, monkeypatch):
    from server.db.engine import SCHEMA_VERSION, create_tables, dispose_engines

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the knowledge_base table as Chatchat 0.2.x and schema 1 made it
        db.execute(
            "CREATE TABLE knowledge_base (id INTEGER PRIMARY KEY, kb_name VARCHAR(50), kb_info VARCHAR(200), "
            "vs_type VARCHAR(50), embed_model VARCHAR(50), file_count INTEGER, create_time DATETIME)"
        )
        db.execute("INSERT INTO knowledge_base VALUES (1, 'legacy', '', 'faiss', 'all-MiniLM-L6-v2', 0, NULL)")
        db.execute("CREATE TABLE schema_info (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, updated_at DATETIME)")
        db.execute("INSERT INTO schema_info VALUES (1, 1, NULL)")
    url = f"sqlite:///{path}"
    try:
        assert create_tables(url) == SCHEMA_VERSION >= 3
    finally:
        dispose_engines()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT kb_name, embed_fingerprint FROM knowledge_base").fetchall() == [("legacy", None)]
        assert db.execute("SELECT version FROM schema_info").fetchone() == (SCHEMA_VERSION,)
