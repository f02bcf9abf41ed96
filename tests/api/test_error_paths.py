"""Errors a client sees name a broken file relative to the knowledge base, never by its server path."""

from __future__ import annotations

import json
import re

import pytest

from tests.api.helpers import create_kb, upload

KB = "paths_kb"
BROKEN = "reports/broken.docx"  # not a zip archive: python-docx says "Package not found at '<path>'"
NOT_A_DOCX = b"this is plain text, not a Word document"


def assert_names_file_without_server_path(message: str, api_server, file_name: str = BROKEN) -> None:
    assert file_name in message, message
    assert str(api_server.kb_root) not in message, message
    assert str(api_server.data_root) not in message, message
    assert not re.search(r"['\"\s]/\w", message), f"absolute path in: {message}"


@pytest.fixture(scope="module")
def broken_kb(client):
    create_kb(client, KB)
    answer = upload(client, KB, {BROKEN: NOT_A_DOCX, "good.md": b"# Good\n\nThe ferry leaves at noon."})
    return answer


def test_upload_docs_failed_files(broken_kb, api_server):
    failed = broken_kb["data"]["failed_files"]
    assert list(failed) == [BROKEN]
    assert_names_file_without_server_path(failed[BROKEN], api_server)


def test_file_details_error_column(broken_kb, client, api_server):
    body = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": KB}).json()
    rows = {row["file_name"]: row for row in body["data"]}
    assert rows["good.md"]["in_db"] and not rows["good.md"]["error"]
    assert_names_file_without_server_path(rows[BROKEN]["error"], api_server)


def test_update_docs_failed_files(broken_kb, client, api_server):
    body = {"knowledge_base_name": KB, "file_names": [BROKEN]}
    failed = client.post("/knowledge_base/update_docs", json=body).json()["data"]["failed_files"]
    assert_names_file_without_server_path(failed[BROKEN], api_server)


def test_recreate_vector_store_progress(broken_kb, client, api_server):
    with client.stream("POST", "/knowledge_base/recreate_vector_store", json={"knowledge_base_name": KB}) as response:
        chunks = list(response.iter_raw())
    events = [json.loads(chunk[6:-4]) for chunk in chunks if chunk.startswith(b"data: ")]
    failed = [e["msg"] for e in events if e["code"] == 500]
    assert len(failed) == 1
    assert_names_file_without_server_path(failed[0], api_server)


def test_file_chat_upload_hides_the_temp_folder(client, api_server):
    answer = client.post("/knowledge_base/upload_temp_docs", files=[("files", ("memo.docx", NOT_A_DOCX))]).json()
    [failure] = answer["data"]["failed_files"]
    assert_names_file_without_server_path(failure["memo.docx"], api_server, "memo.docx")


def test_a_failed_upload_write_hides_the_content_folder(broken_kb, client, api_server):
    upload(client, KB, {"folder/inner.txt": b"A file inside a folder."})
    answer = upload(client, KB, {"folder": b"a file named like an existing folder"}, override="true")
    message = answer["data"]["failed_files"]["folder"]
    assert "Errno" in message  # replacing a folder by a file fails in the OS
    assert_names_file_without_server_path(message, api_server, "folder")
