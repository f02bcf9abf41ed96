"""Hostile input: path traversal in every form, wildcard names, symlinks, pickles, malformed bodies.

Every refusal must be the contract's 403 envelope (or a 422 naming the field), and nothing
outside the data root may be read, written or deleted.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest

from tests.api.helpers import create_kb, upload

KB = "target_kb"
SECRET = "TOP-SECRET-CANARY-8812"
ATTACK = {"code": 403, "msg": "Don't attack me", "data": None}

BAD_KB_NAMES = [
    "..",
    ".",
    "../outside",
    "../../etc",
    "/etc",
    "/tmp/evil",
    "a/b",
    "a\\b",
    "..\\..\\windows",
    "%",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fetc",
    "..%2f..%2f",
    "%252e%252e",
    "bad\x00name",
    ".hidden",
    "*",
    "x" * 300,
]
BAD_FILE_NAMES = [
    "../../secret.txt",
    "../content/../../secret.txt",
    "/etc/passwd",
    "sub/../../../secret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "..%2f..%2fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "..\\..\\secret.txt",
    "C:\\Windows\\win.ini",
    "a\x00b.txt",
    "./../secret.txt",
]


@pytest.fixture(scope="module")
def outside(api_server):
    """A secret file and folder outside the knowledge-base root, next to it in the data root."""
    secret_dir = api_server.data_root / "outside"
    secret_dir.mkdir(exist_ok=True)
    secret = secret_dir / "secret.txt"
    secret.write_text(SECRET)
    (api_server.kb_root / "secret.txt").write_text(SECRET)  # one level up from a KB folder
    return secret


@pytest.fixture(scope="module")
def kb(client, api_server, outside):
    create_kb(client, KB)
    upload(client, KB, {"ok.txt": b"An ordinary document about gardening and tomatoes."})
    content = api_server.kb_root / KB / "content"
    os.symlink(outside, content / "leak.txt")
    os.symlink(outside.parent, content / "leakdir")
    return KB


def kb_names(client) -> list[str]:
    return client.get("/knowledge_base/list_knowledge_bases").json()["data"]


def root_snapshot(api_server) -> set[str]:
    """Every path under the data root but the logs and the (empty) temp-upload folder itself."""
    skip = {api_server.data_root / "tmp"}
    entries = api_server.data_root.rglob("*")
    return {str(p.relative_to(api_server.data_root)) for p in entries if "logs" not in p.parts and p not in skip}


@pytest.mark.parametrize("name", BAD_KB_NAMES)
def test_bad_kb_names_are_refused_everywhere(client, api_server, kb, outside, name):
    before = kb_names(client)
    posts = [
        ("/knowledge_base/create_knowledge_base", {"knowledge_base_name": name}),
        ("/knowledge_base/delete_knowledge_base", name),
        ("/knowledge_base/update_info", {"knowledge_base_name": name, "kb_info": "x"}),
        ("/knowledge_base/search_docs", {"knowledge_base_name": name, "query": "x"}),
        (
            "/knowledge_base/delete_docs",
            {"knowledge_base_name": name, "file_names": ["secret.txt"], "delete_content": True},
        ),
        ("/knowledge_base/update_docs", {"knowledge_base_name": name, "file_names": ["secret.txt"]}),
        ("/knowledge_base/update_docs_by_id", {"knowledge_base_name": name, "docs": {}}),
        ("/knowledge_base/recreate_vector_store", {"knowledge_base_name": name}),
        (
            "/knowledge_base/kb_summary_api/summary_file_to_vector_store",
            {"knowledge_base_name": name, "file_name": "a"},
        ),
        ("/knowledge_base/kb_summary_api/recreate_summary_vector_store", {"knowledge_base_name": name}),
        ("/knowledge_base/kb_summary_api/summary_doc_ids_to_vector_store", {"knowledge_base_name": name}),
    ]
    for path, body in posts:
        response = client.post(path, json=body)
        assert response.status_code == 200 and response.json() == ATTACK, (path, response.text)
    listing = client.get("/knowledge_base/list_files", params={"knowledge_base_name": name}).json()
    assert listing == {**ATTACK, "data": []}
    response = client.get(
        "/knowledge_base/download_doc", params={"knowledge_base_name": name, "file_name": "secret.txt"}
    )
    assert response.json() == ATTACK
    answer = client.post(
        "/knowledge_base/upload_docs", data={"knowledge_base_name": name}, files=[("files", ("evil.txt", b"x"))]
    ).json()
    assert answer == ATTACK
    assert kb_names(client) == before
    assert outside.read_text() == SECRET and (api_server.kb_root / "secret.txt").read_text() == SECRET


@pytest.mark.parametrize("file_name", BAD_FILE_NAMES)
def test_bad_file_names_are_refused_everywhere(client, api_server, kb, outside, file_name):
    before = root_snapshot(api_server)
    response = client.get("/knowledge_base/download_doc", params={"knowledge_base_name": KB, "file_name": file_name})
    assert response.json() == ATTACK and SECRET not in response.text
    for path, body in [
        ("/knowledge_base/delete_docs", {"knowledge_base_name": KB, "file_names": [file_name], "delete_content": True}),
        ("/knowledge_base/update_docs", {"knowledge_base_name": KB, "file_names": [file_name]}),
        ("/knowledge_base/search_docs", {"knowledge_base_name": KB, "file_name": file_name}),
        (
            "/knowledge_base/kb_summary_api/summary_file_to_vector_store",
            {"knowledge_base_name": KB, "file_name": file_name},
        ),
    ]:
        assert client.post(path, json=body).json() == ATTACK, path
    docs = json.dumps({file_name: [{"page_content": "x"}]})
    answer = client.post(
        "/knowledge_base/update_docs", json={"knowledge_base_name": KB, "file_names": ["ok.txt"], "docs": docs}
    ).json()
    assert answer == ATTACK
    if "\x00" not in file_name:  # a NUL cannot even travel in a multipart header
        for path, data in [
            ("/knowledge_base/upload_docs", {"knowledge_base_name": KB}),
            ("/knowledge_base/upload_temp_docs", {}),
        ]:
            answer = client.post(path, data=data, files=[("files", (file_name, b"overwritten!"))]).json()
            # The multipart parser itself cuts Windows paths to their last part ("C:\\x\\a.txt" -> "a.txt"):
            # such a file may land inside content/, never anywhere else.
            assert answer == ATTACK or "\\" in file_name, (path, answer)
    after = root_snapshot(api_server)
    # New paths only in the knowledge base, or in file chat's temporary indexes (named by the server's ids)
    allowed = (f"knowledge_base/{KB}/", "knowledge_base/.temp_stores")
    assert before <= after and all(p.startswith(allowed) for p in after - before), after - before
    assert outside.read_text() == SECRET and (api_server.kb_root / "secret.txt").read_text() == SECRET


def test_symlinks_out_of_content_are_never_followed(client, api_server, kb):
    for name in ("leak.txt", "leakdir/secret.txt"):
        response = client.get("/knowledge_base/download_doc", params={"knowledge_base_name": KB, "file_name": name})
        assert response.json() == ATTACK and SECRET not in response.text
    with client.stream("POST", "/knowledge_base/recreate_vector_store", json={"knowledge_base_name": KB}) as response:
        body = response.read().decode()
    assert "leak" not in body and "ok.txt" in body
    hits = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": KB, "query": SECRET, "top_k": 10}
    ).json()
    assert all(SECRET not in hit["page_content"] for hit in hits)
    answer = upload(client, KB, {"leak.txt": b"overwrite through the link"}, override="true")
    assert answer == ATTACK
    assert (api_server.data_root / "outside" / "secret.txt").read_text() == SECRET


def test_symlinked_kb_folder_pointing_outside_is_refused(client, api_server, outside):
    os.symlink(outside.parent, api_server.kb_root / "linked_kb")
    params = {"knowledge_base_name": "linked_kb", "file_name": "secret.txt"}
    assert client.get("/knowledge_base/download_doc", params=params).json() == ATTACK
    assert (
        client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": "linked_kb"}).json() == ATTACK
    )
    assert client.post("/knowledge_base/delete_knowledge_base", json="linked_kb").json() == ATTACK
    assert outside.read_text() == SECRET


def test_names_match_exactly_not_as_sql_patterns(client, kb):
    create_kb(client, "exact_kb")
    for name in ("EXACT_KB", "exact_k_", "exact_kb ", "exact"):
        answer = client.post("/knowledge_base/delete_knowledge_base", json=name).json()
        assert answer["code"] in (403, 404), (name, answer)
    assert "exact_kb" in kb_names(client)
    assert client.get("/knowledge_base/list_files", params={"knowledge_base_name": "exact_k_"}).json()["code"] == 404


def test_a_pickle_in_the_vector_store_is_never_loaded(client, api_server, kb, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    store = api_server.kb_root / KB / "vector_store" / "all-MiniLM-L6-v2"
    (store / "index.pkl").write_bytes(pickle.dumps(Exploit()))
    (store / "index.faiss").write_bytes(b"not a real index")
    hits = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": KB, "query": "tomatoes"}).json()
    assert hits and "tomatoes" in hits[0]["page_content"]
    with client.stream("POST", "/knowledge_base/recreate_vector_store", json={"knowledge_base_name": KB}) as response:
        response.read()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("path", "raw_body", "field"),
    [
        ("/knowledge_base/search_docs", b'{"knowledge_base_name": "target_kb", "query": ', None),
        ("/knowledge_base/search_docs", b'{"knowledge_base_name": "target_kb", "top_k": "many"}', "top_k"),
        ("/knowledge_base/search_docs", b'{"knowledge_base_name": "target_kb", "metadata": [1, 2]}', "metadata"),
        ("/knowledge_base/search_docs", b'{"query": "no kb"}', "knowledge_base_name"),
        ("/knowledge_base/create_knowledge_base", b"[1, 2, 3]", None),
        ("/knowledge_base/delete_docs", b'{"knowledge_base_name": "target_kb", "file_names": "ok.txt"}', "file_names"),
        ("/knowledge_base/update_docs", b'{"knowledge_base_name": "target_kb", "file_names": [], "docs": "{bad json"}', "docs"),
        ("/knowledge_base/update_docs", b'{"knowledge_base_name": "target_kb", "file_names": [], "docs": "[1]"}', "docs"),
        ("/knowledge_base/update_docs", b'{"knowledge_base_name": "target_kb", "file_names": [], "chunk_size": 50, "chunk_overlap": 60}', "chunk_overlap"),
        ("/knowledge_base/update_docs_by_id", b'{"knowledge_base_name": "target_kb", "docs": {"id": 5}}', "docs"),
        ("/other/embed_texts", b'{"texts": "not a list"}', "texts"),
        ("/knowledge_base/delete_knowledge_base", b"\xff\xfe not utf8", None),
    ],
)  # fmt: skip
def test_malformed_json_bodies_get_422_naming_the_field(client, kb, path, raw_body, field):
    response = client.post(path, content=raw_body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "Traceback" not in response.text
    if field:
        assert any(field in [str(part) for part in error["loc"]] for error in detail), detail


def test_malformed_upload_fields_get_422(client, kb):
    for data, field in [
        ({"knowledge_base_name": KB, "docs": "{not json"}, "docs"),
        ({"knowledge_base_name": KB, "docs": '{"ok.txt": "not a list"}'}, "docs"),
        ({"knowledge_base_name": KB, "chunk_size": "big"}, "chunk_size"),
        ({"knowledge_base_name": KB, "override": "maybe"}, "override"),
    ]:
        response = client.post("/knowledge_base/upload_docs", data=data, files=[("files", ("ok.txt", b"x"))])
        assert response.status_code == 422, response.text
        assert any(field in [str(p) for p in error["loc"]] for error in response.json()["detail"])
    response = client.post("/knowledge_base/upload_docs", data={"knowledge_base_name": KB})
    assert response.status_code == 422 and "files" in response.text
