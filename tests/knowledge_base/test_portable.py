"""Portable knowledge bases in-process: export from one data root, import into another, hostile archives."""

from __future__ import annotations

import io
import json
import stat
import zipfile

import numpy as np
import pytest

from server.knowledge_base import paths, portable, service

GUIDE = "# Ports\n\nThe API server listens on port 7861. The web interface is served by Streamlit on port 8501.\n"
FAQ = "question,answer\nHow many legs does a spider have?,A spider has eight legs.\nWhat do cows eat?,Grass.\n"
ZH = "本系统默认的文本分块大小是二百五十个字符，重叠部分是五十个字符。"
QUERIES = ["Which port does the web interface use?", "spider legs", "分块大小是多少", "cows"]


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Two data roots; ``use(name)`` points settings, database and stores at one of them."""
    from configs import reload_settings
    from server.db.engine import create_tables, dispose_engines
    from server.knowledge_base.vector_stores import get_store_cache

    def use(name: str):
        dispose_engines()
        root = tmp_path / name / "knowledge_base"
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("CHATCHAT_KB_ROOT_PATH", str(root))
        reload_settings()
        get_store_cache.cache_clear()
        create_tables()
        return root

    yield use
    dispose_engines()
    get_store_cache.cache_clear()
    monkeypatch.delenv("CHATCHAT_KB_ROOT_PATH")
    reload_settings()


def _build(root, kb="demo", embed_model=None):
    service.create_kb(kb, embed_model=embed_model, kb_info="ports, spiders and chunking")
    for name, text in {"guide.md": GUIDE, "tables/faq.csv": FAQ, "zh.txt": ZH}.items():
        path = root / kb / "content" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / kb / "content" / "notes.unknown").write_text("never ingested")
    report = service.ingest_files(kb, ["guide.md", "tables/faq.csv", "zh.txt"])
    assert report.failed == {}


def _results(kb):
    return [
        [(hit.chunk.doc_id, hit.chunk.metadata["source"], hit.chunk.page_content, hit.score) for hit in found]
        for found in (
            service.search(kb, query, top_k=4, mode=mode)
            for query in QUERIES
            for mode in ("vector", "hybrid", "keyword")
        )
    ]


def test_an_archive_gives_identical_search_results_in_another_data_root_without_embedding(roots, tmp_path):
    root_a = roots("a")
    _build(root_a)
    expected = _results("demo")
    archive = tmp_path / "demo.zip"
    manifest = portable.export_kb("demo", archive)
    assert manifest["embedding"] == {"model": "all-MiniLM-L6-v2", "dimension": 384, "weights": None}

    root_b = roots("b")
    embedded = []
    backend = portable.get_embeddings("all-MiniLM-L6-v2")
    with pytest.MonkeyPatch.context() as patch:  # count every text the import would embed
        patch.setattr(type(backend), "embed", lambda self, texts, **kw: embedded.append(texts))
        result = portable.import_kb(archive)

    assert result.warnings == [] and not result.reembedded and embedded == []
    assert (result.kb_name, result.files, result.content_files) == ("demo", 3, 4)
    assert result.chunks == sum(f["chunks"] for f in manifest["files"])
    assert _results("demo") == expected
    assert (root_b / "demo" / "content" / "notes.unknown").read_text() == "never ingested"
    assert service.get_kb("demo").kb_info == "ports, spiders and chunking"
    details = {d["file_name"]: d for d in service.file_details("demo")}
    assert details["tables/faq.csv"]["document_loader"] and details["tables/faq.csv"]["docs_count"] == 2
    assert not details["notes.unknown"]["in_db"]
    # And under another name in the same root, beside the first import.
    assert portable.import_kb(archive, kb_name="demo_copy").chunks == result.chunks
    assert len(service.search("demo_copy", "spider legs", top_k=1)) == 1


def test_another_embedding_model_re_embeds_with_a_warning(roots, tmp_path, monkeypatch):
    from configs import DEFAULT_EMBEDDING_MODEL
    from server.knowledge_base.embeddings.local import packaged_model_path

    root_a = roots("a")
    monkeypatch.setenv(
        "CHATCHAT_EMBEDDING_MODEL_PATHS", json.dumps({"my-minilm": str(packaged_model_path(DEFAULT_EMBEDDING_MODEL))})
    )
    roots("a")
    _build(root_a, embed_model="my-minilm")
    archive = tmp_path / "mine.zip"
    portable.export_kb("demo", archive)
    monkeypatch.delenv("CHATCHAT_EMBEDDING_MODEL_PATHS")
    roots("b")  # this instance does not know "my-minilm"

    result = portable.import_kb(archive)

    assert result.reembedded and result.embed_model == DEFAULT_EMBEDDING_MODEL
    assert "'my-minilm' is not available here" in result.warnings[0] and "embedded again" in result.warnings[0]
    assert service.get_kb("demo").embed_model == DEFAULT_EMBEDDING_MODEL
    assert service.search("demo", "spider legs", top_k=1, mode="vector")[0].chunk.metadata["source"] == "tables/faq.csv"


def test_an_existing_knowledge_base_is_never_touched(roots, tmp_path):
    root = roots("a")
    _build(root)
    archive = tmp_path / "demo.zip"
    portable.export_kb("demo", archive)
    before = _results("demo")
    with pytest.raises(service.KnowledgeBaseExists):
        portable.import_kb(archive)
    (root / "stray" / "content").mkdir(parents=True)
    (root / "stray" / "content" / "mine.txt").write_text("keep me")
    with pytest.raises(service.KnowledgeBaseExists):
        portable.import_kb(archive, kb_name="stray")  # a folder without a database row is someone's files
    assert (root / "stray" / "content" / "mine.txt").read_text() == "keep me"
    assert _results("demo") == before


# ---- hostile archives ---------------------------------------------------------------------


def _valid_members(dimension=384, chunks=1) -> dict[str, bytes]:
    vectors = io.BytesIO()
    np.save(vectors, np.zeros((chunks, dimension), dtype=np.float32), allow_pickle=False)
    manifest = {
        "format": portable.FORMAT,
        "format_version": portable.FORMAT_VERSION,
        "knowledge_base": {"name": "evil", "info": ""},
        "embedding": {"model": "all-MiniLM-L6-v2", "dimension": dimension},
        "files": [{"file_name": "a.txt", "chunks": chunks}],
    }
    lines = "".join(
        json.dumps({"id": f"c{i}", "text": "x", "metadata": {"source": "a.txt"}}) + "\n" for i in range(chunks)
    )
    return {
        "manifest.json": json.dumps(manifest).encode(),
        "chunks.jsonl": lines.encode(),
        "vectors.npy": vectors.getvalue(),
    }


def _zip(path, members: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for info, data in extra:
            archive.writestr(info, data)


def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


HOSTILE = {
    "traversal": ({"content/../../evil.txt": b"x"}, "outside"),
    "absolute": ({"/etc/evil.txt": b"x"}, "absolute"),
    "backslash": ({"content\\..\\evil.txt": b"x"}, "absolute or malformed"),
    "stranger": ({"run.sh": b"x"}, "not part of a knowledge-base export"),
    "control_character": ({"content/bell\x07.txt": b"x"}, "unsafe file name"),
    "bomb": ({"content/zeros.txt": bytes(5 * 1024 * 1024)}, "zip bomb"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_anything_is_written(roots, tmp_path, case):
    root = roots("a")
    extra_members, message = HOSTILE[case]
    archive = tmp_path / f"{case}.zip"
    _zip(archive, {**_valid_members(), **extra_members})
    with pytest.raises(portable.ArchiveRefused, match=message):
        portable.import_kb(archive)
    assert service.list_kbs() == [] and not (root / "evil").exists()
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()


def test_symlinks_huge_members_and_broken_data_are_refused(roots, tmp_path, monkeypatch):
    from configs import reload_settings

    root = roots("a")
    cases = []
    link = tmp_path / "link.zip"
    _zip(link, _valid_members(), [(_symlink("content/passwd", "/etc/passwd"), b"/etc/passwd")])
    cases.append((link, "is a symlink"))
    big = tmp_path / "big.zip"
    _zip(big, {**_valid_members(), "content/big.bin": np.random.default_rng(0).bytes(300_000)})
    cases.append((big, "more than MAX_UPLOAD_FILE_SIZE"))
    shape = tmp_path / "shape.zip"
    _zip(shape, {**_valid_members(), "vectors.npy": _valid_members(dimension=8)["vectors.npy"]})
    cases.append((shape, "expected float32"))
    lost = tmp_path / "lost.zip"
    _zip(lost, {k: v for k, v in _valid_members().items() if k != "vectors.npy"})
    cases.append((lost, "vectors.npy missing"))
    foreign = tmp_path / "foreign.zip"
    _zip(foreign, {**_valid_members(), "chunks.jsonl": b'{"id": "c0", "text": "x", "metadata": {"source": "b.txt"}}\n'})
    cases.append((foreign, "not 'a.txt'"))
    not_zip = tmp_path / "plain.zip"
    not_zip.write_text("hello")
    cases.append((not_zip, "not a zip archive"))
    monkeypatch.setenv("CHATCHAT_MAX_UPLOAD_FILE_SIZE", "200000")
    reload_settings()
    for archive, message in cases:
        with pytest.raises(portable.ArchiveRefused, match=message):
            portable.import_kb(archive)
    monkeypatch.setenv("CHATCHAT_KB_ARCHIVE_MAX_UNPACKED_BYTES", "1000")
    reload_settings()
    with pytest.raises(portable.ArchiveRefused, match="KB_ARCHIVE_MAX_UNPACKED_BYTES"):
        portable.import_kb(big)
    assert service.list_kbs() == [] and not (root / "evil").exists()


def test_a_header_that_understates_a_member_is_caught_while_reading(roots, tmp_path):
    roots("a")
    archive = tmp_path / "liar.zip"
    _zip(archive, {**_valid_members(), "content/a.txt": b"A" * 5000})
    data = bytearray(archive.read_bytes())
    # Rewrite the uncompressed size of content/a.txt to 10 bytes, in its local and its central header.
    for signature, name_offset, size_offset in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        position = data.find(b"content/a.txt", data.find(signature))
        header = position - name_offset
        assert data[header : header + 4] == signature
        data[header + size_offset : header + size_offset + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(portable.ArchiveRefused, match="content/a.txt"):
        portable.import_kb(archive)
    assert service.list_kbs() == [] and not paths.kb_path("evil").exists()


def test_an_empty_knowledge_base_travels_too(roots, tmp_path):
    roots("a")
    service.create_kb("empty", kb_info="nothing yet")
    archive = tmp_path / "empty.zip"
    assert portable.export_kb("empty", archive)["chunks"] == 0
    roots("b")
    result = portable.import_kb(archive)
    assert (result.kb_name, result.files, result.chunks, result.warnings) == ("empty", 0, 0, [])
    assert service.get_kb("empty").kb_info == "nothing yet" and service.search("empty", "anything") == []
