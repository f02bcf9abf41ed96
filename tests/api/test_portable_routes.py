"""Portable knowledge bases across two real API servers with their own data roots, over HTTP and the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import httpx
import pytest

from tests.helpers.api_server import start_api_server
from tests.helpers.processes import REPO_ROOT

KEY = "portable-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FILES = {
    "guide.md": "# Ports\n\nThe API server listens on port 7861. The web UI is served by Streamlit on port 8501.\n",
    "docs/faq.txt": "Spiders have eight legs. Insects have six legs. Cows eat grass all day long.",
    "zh.txt": "本系统默认的文本分块大小是二百五十个字符，重叠部分是五十个字符。",
}
QUERIES = ["which port does the web UI use", "how many legs does a spider have", "分块大小", "grass"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    env = {"CHATCHAT_API_KEYS": json.dumps([KEY])}
    with (
        start_api_server(tmp_path_factory.mktemp("source"), **env) as source,
        start_api_server(tmp_path_factory.mktemp("target"), **env) as target,
    ):
        assert source.kb_root != target.kb_root
        _create(source.url, "portable", FILES)
        yield source, target


def _create(url: str, kb: str, files: dict[str, str]) -> None:
    created = httpx.post(
        f"{url}/knowledge_base/create_knowledge_base", json={"knowledge_base_name": kb}, headers=AUTH, timeout=120
    )
    assert created.json()["code"] == 200, created.text
    uploads = [("files", (name, text.encode(), "text/plain")) for name, text in files.items()]
    # Sub-folders keep their path when the upload names them (the multipart file name).
    body = httpx.post(
        f"{url}/knowledge_base/upload_docs",
        data={"knowledge_base_name": kb},
        files=uploads,
        headers=AUTH,
        timeout=300,
    ).json()
    assert body["code"] == 200 and not body["data"]["failed_files"], body


def _search(url: str, kb: str) -> list:
    results = []
    for query in QUERIES:
        for mode in ("vector", "keyword", "hybrid"):
            body = {"knowledge_base_name": kb, "query": query, "top_k": 3, "search_mode": mode}
            hits = httpx.post(f"{url}/knowledge_base/search_docs", json=body, headers=AUTH, timeout=60).json()
            results.append([(h["id"], h["metadata"]["source"], h["page_content"], h["score"]) for h in hits])
    return results


def _export(url: str, kb: str) -> bytes:
    response = httpx.get(
        f"{url}/knowledge_base/export_knowledge_base", params={"knowledge_base_name": kb}, headers=AUTH, timeout=120
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    return response.content


def _import(url: str, archive: bytes, **form: str) -> dict:
    return httpx.post(
        f"{url}/knowledge_base/import_knowledge_base",
        files={"file": ("kb.zip", archive, "application/zip")},
        data=form,
        headers=AUTH,
        timeout=300,
    ).json()


def test_export_then_import_on_another_server_searches_identically(servers):
    source, target = servers
    archive = _export(source.url, "portable")
    names = set(zipfile.ZipFile(io.BytesIO(archive)).namelist())
    assert {"manifest.json", "chunks.jsonl", "vectors.npy", "keywords.json"} <= names
    assert {f"content/{name}" for name in FILES} <= names

    body = _import(target.url, archive)

    assert body["code"] == 200, body
    assert body["data"]["reembedded"] is False and body["data"]["warnings"] == []
    assert body["data"]["files"] == len(FILES)
    assert _search(target.url, "portable") == _search(source.url, "portable")
    listed = httpx.get(
        f"{target.url}/knowledge_base/list_files", params={"knowledge_base_name": "portable"}, headers=AUTH
    )
    assert sorted(listed.json()["data"]) == sorted(FILES)
    download = httpx.get(
        f"{target.url}/knowledge_base/download_doc",
        params={"knowledge_base_name": "portable", "file_name": "docs/faq.txt"},
        headers=AUTH,
    )
    assert download.text == FILES["docs/faq.txt"]
    # The same archive again: the name is taken, and the knowledge base is untouched.
    again = _import(target.url, archive)
    assert again["code"] == 409 and "portable" in again["msg"]
    assert _search(target.url, "portable") == _search(source.url, "portable")


def test_the_cli_exports_and_imports_across_data_roots(servers, tmp_path):
    source, target = servers
    archive = tmp_path / "cli.zip"
    exported = _cli(source.env, "--export", "portable", str(archive))
    assert exported.returncode == 0 and "exported portable" in exported.stdout, exported.stderr
    imported = _cli(target.env, "--import", str(archive), "-n", "from_cli")
    assert imported.returncode == 0 and "(vectors kept)" in imported.stdout, imported.stderr
    assert _search(target.url, "from_cli") == _search(source.url, "portable")
    taken = _cli(target.env, "--import", str(archive), "-n", "from_cli")
    assert taken.returncode == 2 and "exists already" in taken.stderr


def test_hostile_archives_get_a_clear_error_and_change_nothing(servers, tmp_path):
    _, target = servers
    before = httpx.get(f"{target.url}/knowledge_base/list_knowledge_bases", headers=AUTH).json()["data"]
    traversal = io.BytesIO()
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("manifest.json", "{}")
        archive.writestr("content/../../../escaped.txt", "x")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("content/zeros.txt", bytes(20 * 1024 * 1024))

    refused = _import(target.url, traversal.getvalue())
    assert refused["code"] == 400 and "outside" in refused["msg"]
    bombed = _import(target.url, bomb.getvalue())
    assert bombed["code"] == 400 and "zip bomb" in bombed["msg"]
    assert _import(target.url, b"not a zip")["code"] == 400
    assert _import(target.url, traversal.getvalue(), knowledge_base_name="../x") == {
        "code": 403,
        "msg": "Don't attack me",
        "data": None,
    }
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb.getvalue())
    cli = _cli(target.env, "--import", str(path))
    assert cli.returncode == 2 and "zip bomb" in cli.stderr
    after = httpx.get(f"{target.url}/knowledge_base/list_knowledge_bases", headers=AUTH).json()["data"]
    assert after == before
    assert not list(target.kb_root.parent.rglob("escaped.txt"))


def test_export_needs_the_key_and_a_known_knowledge_base(servers):
    source, _ = servers
    url = f"{source.url}/knowledge_base/export_knowledge_base"
    assert httpx.get(url, params={"knowledge_base_name": "portable"}).status_code == 401
    missing = httpx.get(url, params={"knowledge_base_name": "nope"}, headers=AUTH).json()
    assert missing["code"] == 404
    assert httpx.get(url, params={"knowledge_base_name": "../etc"}, headers=AUTH).json()["code"] == 403


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "init_database.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
