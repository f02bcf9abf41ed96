"""Hostile files in an upload fail alone, naming the limit; the good files of the same upload are searchable,
the server keeps answering, and a rebuild meets the same limits instead of crashing."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.api.helpers import create_kb, upload
from tests.fixtures import documents as fx
from tests.knowledge_base.test_untrusted_limits import huge_page_pdf, png_header_bomb, rezip

KB = "untrusted_kb"
GOOD = "notes/good.txt"
HOSTILE = {"poster.pdf": "OCR_MAX_PIXELS", "bomb.png": "OCR_MAX_PIXELS", "bomb.docx": "MAX_OFFICE_COMPRESSION_RATIO"}


def hostile_files(folder) -> dict[str, bytes]:
    docx = fx.make_docx(folder)
    with zipfile.ZipFile(docx) as archive:
        xml = archive.read("word/document.xml")
    padded = xml.replace(b"</w:body>", b" " * (30 * 1024 * 1024) + b"</w:body>")
    return {
        "poster.pdf": huge_page_pdf(folder / "poster.pdf").read_bytes(),  # 28800x28800 pixels at scale 2
        "bomb.png": png_header_bomb(9000, 9000),
        "bomb.docx": rezip(docx, folder / "bomb.docx", replace={"word/document.xml": padded}).read_bytes(),
    }


@pytest.fixture(scope="module")
def uploaded(client, tmp_path_factory):
    create_kb(client, KB)
    files = {**hostile_files(tmp_path_factory.mktemp("hostile")), GOOD: b"The lighthouse keeper feeds the cats."}
    return upload(client, KB, files)


def test_each_hostile_file_fails_naming_its_limit(uploaded):
    failed = uploaded["data"]["failed_files"]
    assert set(failed) == set(HOSTILE), failed
    for name, setting in HOSTILE.items():
        assert setting in failed[name], failed[name]


def test_the_good_file_of_the_same_upload_is_searchable(uploaded, client):
    body = {"knowledge_base_name": KB, "query": "lighthouse keeper cats", "top_k": 1, "score_threshold": 1.0}
    hits = client.post("/knowledge_base/search_docs", json=body).json()
    assert hits and hits[0]["metadata"]["source"] == GOOD


def test_the_server_keeps_answering(uploaded, client):
    assert client.get("/health").status_code == 200


def test_the_database_keeps_the_reason(uploaded, client):
    body = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": KB}).json()
    rows = {row["file_name"]: row for row in body["data"]}
    assert rows[GOOD]["in_db"] and not rows[GOOD]["error"]
    for name, setting in HOSTILE.items():
        assert setting in rows[name]["error"], rows[name]


def test_a_rebuild_meets_the_same_limits(uploaded, client):
    with client.stream("POST", "/knowledge_base/recreate_vector_store", json={"knowledge_base_name": KB}) as response:
        chunks = list(response.iter_raw())
    events = [json.loads(chunk[6:-4]) for chunk in chunks if chunk.startswith(b"data: ")]
    assert {e["doc"] for e in events if e["code"] == 200} == {GOOD}
    failed = [e["msg"] for e in events if e["code"] == 500]
    assert len(failed) == len(HOSTILE) and all(any(s in msg for s in HOSTILE.values()) for msg in failed), failed
    assert client.get("/health").status_code == 200
