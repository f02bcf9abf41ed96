"""The knowledge-base service end to end, with the real default embedding model."""

import json
from contextlib import closing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from langchain_core.documents import Document

from server.knowledge_base import paths, service
from tests.conftest import REPO_ROOT

GUIDE = """# Ports

The API server listens on port 7861. The web interface is served by Streamlit on port 8501.

# Installing

Install the requirements with pip, then run init_database.py to build the knowledge bases.
"""
CSV = "question,answer\nWhat is the capital of France?,Paris is the capital of France.\nHow many legs does a spider have?,A spider has eight legs.\n"
ZH = "本系统默认的文本分块大小是二百五十个字符，重叠部分是五十个字符。"


def write(kb_root, kb, name, data):
    path = kb_root / kb / "content" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return name


def ingest_demo(kb_root, vs_type=None):
    """The "demo" knowledge base with a Markdown guide, a CSV table and a GBK-encoded Chinese text."""
    service.create_kb("demo", vs_type)
    names = [
        write(kb_root, "demo", "guide.md", GUIDE),
        write(kb_root, "demo", "tables/faq.csv", CSV),
        write(kb_root, "demo", "zh.txt", ZH.encode("gbk")),
    ]
    report = service.ingest_files("demo", names)
    assert report.failed == {}
    return report


@pytest.fixture
def demo_kb(kb_root):
    return ingest_demo(kb_root)


def top_source(query):
    return service.search("demo", query, top_k=1)[0].chunk.metadata["source"]


def test_questions_find_the_chunk_that_answers_them(demo_kb):
    assert top_source("Which port does the web interface use?") == "guide.md"
    hit = service.search("demo", "how many legs has a spider", top_k=1)[0]
    assert hit.chunk.metadata == {"source": "tables/faq.csv", "row": 2}
    assert "eight legs" in hit.chunk.page_content
    assert top_source("分块大小是多少") == "zh.txt"


def test_search_honours_top_k_and_threshold(demo_kb):
    assert len(service.search("demo", "port", top_k=2)) == 2
    hits = service.search("demo", "port", top_k=10, score_threshold=1.0)
    assert len(hits) == demo_kb.chunks
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted(h.score for h in hits)
    assert service.search("demo", "port", top_k=10, score_threshold=0.0) == []


def test_db_rows_match_vectors(demo_kb, kb_root):
    assert sorted(service.list_files("demo")) == ["guide.md", "tables/faq.csv", "zh.txt"]
    faq_chunks = service.list_docs("demo", file_name="tables/faq.csv")
    assert [c.metadata["row"] for c in faq_chunks] == [1, 2]
    assert len(service.list_docs("demo", metadata={"row": 2})) == 1
    db = sqlite3.connect(kb_root / "info.db")
    assert db.execute("select file_count from knowledge_base where kb_name='demo'").fetchone() == (3,)
    rows = db.execute("select file_name, docs_count, file_hash, document_loader_name from knowledge_file").fetchall()
    assert {r[0] for r in rows} == {"guide.md", "tables/faq.csv", "zh.txt"}
    assert all(len(r[2]) == 64 for r in rows)
    assert db.execute("select count(*) from file_doc where kb_name='demo'").fetchone()[0] == demo_kb.chunks


def test_reingesting_a_file_replaces_its_chunks(demo_kb, kb_root):
    before = len(service.search("demo", "x", top_k=100))
    write(kb_root, "demo", "guide.md", "# Ports\n\nOnly one short paragraph now.")
    service.ingest_files("demo", ["guide.md"])
    chunks = service.list_docs("demo", file_name="guide.md")
    assert len(chunks) == 1 and "Only one short paragraph" in chunks[0].page_content
    assert len(service.search("demo", "x", top_k=100)) == before - demo_kb.files[0].chunks + 1


def test_delete_removes_exactly_that_files_chunks(demo_kb, kb_root):
    failed = service.delete_files("demo", ["guide.md", "missing.md"], delete_content=True)
    assert failed == {"missing.md": "未找到文件 missing.md"}
    remaining = service.search("demo", "port", top_k=100)
    assert {h.chunk.metadata["source"] for h in remaining} == {"tables/faq.csv", "zh.txt"}
    assert not (kb_root / "demo" / "content" / "guide.md").exists()
    assert sorted(service.list_files("demo")) == ["tables/faq.csv", "zh.txt"]


def test_broken_files_fail_alone_with_reasons(kb_root):
    service.create_kb("mixed")
    names = [
        write(kb_root, "mixed", "good.md", GUIDE),
        write(kb_root, "mixed", "binary.txt", bytes(range(256)) * 4),
        write(kb_root, "mixed", "empty.txt", b""),
        write(kb_root, "mixed", "notes.xyz", "plain"),
    ]
    report = service.ingest_files("mixed", names)
    assert set(report.failed) == {"binary.txt", "empty.txt", "notes.xyz"}
    assert "empty" in report.failed["empty.txt"]
    assert "unsupported" in report.failed["notes.xyz"]
    assert service.list_files("mixed") == ["good.md"]
    from server.db.repositories.knowledge_file import list_errors

    assert set(list_errors("mixed")) == {"binary.txt", "empty.txt", "notes.xyz"}


def test_custom_docs_and_update_by_id(demo_kb):
    count = service.add_custom_docs("demo", "guide.md", [Document("custom docs about llamas", metadata={"k": 1})])
    assert count == 1
    chunk = service.list_docs("demo", file_name="guide.md")[0]
    assert chunk.page_content == "custom docs about llamas" and chunk.metadata["k"] == 1
    assert service.update_docs_by_id("demo", {chunk.doc_id: Document("alpacas live in the Andes", metadata={"k": 2})})
    hit = service.search("demo", "where do alpacas live", top_k=1)[0]
    assert hit.chunk.doc_id == chunk.doc_id and hit.chunk.metadata["source"] == "guide.md"
    assert not service.update_docs_by_id("demo", {"no-such-id": Document("x")})


def test_create_refuses_duplicates_and_unknown_models(kb_root):
    service.create_kb("one")
    with pytest.raises(service.KnowledgeBaseExists):
        service.create_kb("one")
    from server.knowledge_base.embeddings import UnknownEmbeddingModel

    with pytest.raises(UnknownEmbeddingModel, match="not found"):
        service.create_kb("two", embed_model="no-such-model")
    assert not service.kb_exists("two")


def test_delete_kb_removes_folder_and_rows(demo_kb, kb_root):
    service.delete_kb("demo")
    assert not (kb_root / "demo").exists()
    assert not service.kb_exists("demo")
    with pytest.raises(service.KnowledgeBaseNotFound):
        service.list_files("demo")


def test_recreate_rebuilds_from_content(demo_kb, kb_root):
    write(kb_root, "demo", "extra.md", "Llamas are members of the camel family.")
    report = service.recreate_vector_store("demo")
    assert report.ingested == 4
    assert top_source("Which animals are related to camels?") == "extra.md"


def _run_cli(kb_root, *args, **popen):
    env = {**os.environ, "CHATCHAT_KB_ROOT_PATH": str(kb_root), "CHATCHAT_INGEST_CHECKPOINT_CHUNKS": "5"}
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "init_database.py"), "-q", *args], env=env,
                            cwd=REPO_ROOT, **popen)  # fmt: skip


def _store_and_rows(kb_root, kb):
    folder = kb_root / kb / "vector_store" / "all-MiniLM-L6-v2"
    with closing(sqlite3.connect(folder / "store.sqlite")) as store:  # what the FAISS store committed
        stored = store.execute("select doc_id, metadata from chunks").fetchall()
    docs = [{"id": doc_id, "metadata": json.loads(metadata)} for doc_id, metadata in stored]
    db = sqlite3.connect(kb_root / "info.db")
    rows = db.execute("select file_name, doc_id from file_doc where kb_name=?", (kb,)).fetchall()
    return docs, rows


def test_concurrent_ingestions_into_one_kb_lose_nothing(kb_root):
    service.create_kb("shared")
    for i in range(6):
        write(kb_root, "shared", f"a{i}.md", f"Alpha document {i}. " * 40)
        write(kb_root, "shared", f"b{i}.md", f"Beta document {i}. " * 40)
    script = (
        "import sys; sys.path.insert(0, {repo!r}); from server.knowledge_base import service;"
        "r = service.ingest_files('shared', [{files}], workers=1); assert not r.failed, r.failed"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script.format(repo=str(REPO_ROOT), files=", ".join(
            repr(f"{prefix}{i}.md") for i in range(6)))],
            env={**os.environ, "CHATCHAT_KB_ROOT_PATH": str(kb_root), "CHATCHAT_INGEST_CHECKPOINT_CHUNKS": "3"})
        for prefix in ("a", "b")
    ]  # fmt: skip
    assert [p.wait(timeout=240) for p in processes] == [0, 0]
    docs, rows = _store_and_rows(kb_root, "shared")
    assert {d["metadata"]["source"] for d in docs} == {f"{p}{i}.md" for p in "ab" for i in range(6)}
    assert sorted(d["id"] for d in docs) == sorted(r[1] for r in rows)
    assert len(service.list_files("shared")) == 12


def test_killed_ingestion_resumes_with_increment(kb_root):
    content = kb_root / "big" / "content"
    content.mkdir(parents=True)
    for i in range(40):
        (content / f"doc{i:02}.md").write_text(f"Document number {i} talks about topic {i}. " * 30)
    process = _run_cli(kb_root, "--recreate-vs", "--workers", "1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    db_path = kb_root / "info.db"
    while time.time() < deadline:  # wait for the first checkpoint, then kill hard
        if db_path.exists():
            try:
                count = sqlite3.connect(db_path).execute("select count(*) from knowledge_file").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
            if count > 0:
                break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    docs, rows = _store_and_rows(kb_root, "big")
    assert {r[1] for r in rows} <= {d["id"] for d in docs}  # rows never point at missing vectors
    done_before = len({r[0] for r in rows})
    assert done_before < 40, "the kill came too late to test resuming"

    assert _run_cli(kb_root, "-i", "-n", "big").wait(timeout=300) == 0
    docs, rows = _store_and_rows(kb_root, "big")
    assert len({r[0] for r in rows}) == 40
    assert sorted(d["id"] for d in docs) == sorted(r[1] for r in rows)  # no orphans, no duplicates
    assert paths.list_content_files("big") == sorted(f"doc{i:02}.md" for i in range(40))


def test_a_removed_embedding_model_fails_before_any_file_is_parsed(kb_root, tmp_path, monkeypatch):
    from configs import DEFAULT_EMBEDDING_MODEL, reload_settings
    from server.knowledge_base.embeddings import UnknownEmbeddingModel
    from server.knowledge_base.embeddings.local import packaged_model_path

    models = tmp_path / "models"
    models.mkdir()
    (models / "my-minilm").symlink_to(packaged_model_path(DEFAULT_EMBEDDING_MODEL), target_is_directory=True)
    monkeypatch.setenv("CHATCHAT_MODEL_ROOT_PATH", str(models))
    reload_settings()
    service.create_kb("lost_model", embed_model="my-minilm")
    write(kb_root, "lost_model", "a.txt", "some text")
    (models / "my-minilm").unlink()  # the user deleted the model folder after creating the knowledge base
    parsed = []
    try:
        with pytest.raises(UnknownEmbeddingModel, match="my-minilm"):
            service.ingest_files("lost_model", ["a.txt"], progress=lambda kind, item: parsed.append(item))
        assert parsed == []
    finally:
        monkeypatch.delenv("CHATCHAT_MODEL_ROOT_PATH")
        reload_settings()  # later tests must not see the temporary model root


def test_reingesting_an_edited_file_embeds_only_the_chunks_that_changed(kb_root):
    service.create_kb("edited")
    paragraphs = [f"Section {i}. The committee met on day {i} to discuss topic number {i} at length." for i in range(12)]
    write(kb_root, "edited", "minutes.txt", "\n\n".join(paragraphs))
    first = service.ingest_files("edited", ["minutes.txt"], service.default_chunking(chunk_size=100, chunk_overlap=0))
    assert first.chunks == 12 and first.reused_chunks == 0

    paragraphs[5] = "Section 5. The committee cancelled the picnic because of heavy rain."
    write(kb_root, "edited", "minutes.txt", "\n\n".join(paragraphs))
    second = service.ingest_files("edited", ["minutes.txt"], service.default_chunking(chunk_size=100, chunk_overlap=0))
    assert second.chunks == 12 and second.reused_chunks == 11

    assert len(service.list_docs("edited", "minutes.txt")) == 12
    hit = service.search("edited", "why was the picnic cancelled", top_k=1)[0]
    assert "heavy rain" in hit.chunk.page_content
    # A reused vector is the same as a fresh one: the exact text of an unchanged chunk scores ~0.
    exact = service.search("edited", paragraphs[3], top_k=1)[0]
    assert exact.chunk.page_content == paragraphs[3] and exact.score < 0.01


def test_checkpoints_come_every_ingest_checkpoint_chunks(kb_root, monkeypatch):
    from configs import reload_settings
    from server.knowledge_base.vector_stores.faiss_store import read_generation

    monkeypatch.setenv("CHATCHAT_INGEST_CHECKPOINT_CHUNKS", "2")
    reload_settings()
    try:
        service.create_kb("growing")
        names = [write(kb_root, "growing", f"n{i:02}.txt", f"Note {i} about item {i}.") for i in range(60)]
        report = service.ingest_files("growing", names)
    finally:
        monkeypatch.delenv("CHATCHAT_INGEST_CHECKPOINT_CHUNKS")
        reload_settings()
    assert report.chunks == 60 and report.failed == {}
    saves = read_generation(paths.vector_store_path("growing", "all-MiniLM-L6-v2"))
    # A save writes only its change, so the interval stays INGEST_CHECKPOINT_CHUNKS however big the store
    # grows: 30 checkpoints of 2 chunks (files may be taken a few at a time), plus create_kb's empty store.
    assert 20 <= saves <= 31, saves
    assert len(service.list_docs("growing")) == 60
