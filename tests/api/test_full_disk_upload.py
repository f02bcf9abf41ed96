"""A full disk while an upload's vectors are saved, over HTTP: a clear 507, and no orphan chunks.

The server process gets a sitecustomize hook (no root, no tiny tmpfs): while MARKER exists, the
FAISS store's SQLite commit fails with SQLITE_FULL ("database or disk is full"), and os.fsync raises
ENOSPC (the snapshot and CURRENT written after a commit), so the save fails as on a full disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from server.knowledge_base.vector_stores import FaissStore
from tests.api.helpers import create_kb
from tests.helpers.processes import REPO_ROOT

HOOK_DIR = Path(tempfile.mkdtemp(prefix="chatkb_full_disk_"))
MARKER = HOOK_DIR / "disk-is-full"
(HOOK_DIR / "sitecustomize.py").write_text(
    "import errno, os, sqlite3\n"
    "_marker = os.environ.get('CHATKB_TEST_DISK_FULL_MARKER')\n"
    "if _marker:\n"
    "    _real_fsync = os.fsync\n"
    "    def _fsync(fd):\n"
    "        if os.path.exists(_marker):\n"
    "            raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "        return _real_fsync(fd)\n"
    "    os.fsync = _fsync\n"
    "    class _FullDisk(sqlite3.Connection):\n"
    "        def commit(self):\n"
    "            if os.path.exists(_marker):\n"
    "                raise sqlite3.OperationalError('database or disk is full')\n"
    "            return super().commit()\n"
    "    _real_connect = sqlite3.connect\n"
    "    def _connect(database, *args, **kwargs):\n"
    "        if str(database).endswith('store.sqlite'):  # the FAISS store's database only\n"
    "            kwargs.setdefault('factory', _FullDisk)\n"
    "        return _real_connect(database, *args, **kwargs)\n"
    "    sqlite3.connect = _connect\n"
)
SERVER_ENV = {
    "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOK_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
    "CHATKB_TEST_DISK_FULL_MARKER": str(MARKER),
}
KB = "full_disk_kb"


@pytest.fixture(scope="module", autouse=True)
def remove_temp_dir():
    yield  # set up first, so torn down after the server stopped
    shutil.rmtree(HOOK_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def kb(client):
    create_kb(client, KB)
    return KB


def upload(client, name: str, text: str):
    files = [("files", (name, text.encode()))]
    return client.post("/knowledge_base/upload_docs", data={"knowledge_base_name": KB}, files=files)


def sources_found(client, query: str, mode: str) -> set[str]:
    body = {"knowledge_base_name": KB, "query": query, "top_k": 10, "search_mode": mode, "score_threshold": 1.0}
    return {doc["metadata"]["source"] for doc in client.post("/knowledge_base/search_docs", json=body).json()}


def store_folder(api_server) -> Path:
    (folder,) = (api_server.kb_root / KB / "vector_store").iterdir()
    return folder


def test_a_full_disk_during_an_upload_answers_507_and_leaves_no_orphans(api_server, client, kb):
    assert upload(client, "apple.txt", "Apple orchards bloom in spring.").json()["code"] == 200
    MARKER.touch()
    try:
        response = upload(client, "zucchini.txt", "Zucchini grows fast in summer gardens.")
    finally:
        MARKER.unlink()
    assert response.status_code == 507, response.text
    assert response.json() == {
        "code": 507,
        "msg": "保存向量库失败：disk full while saving the vector store (No space left on device)",
        "data": None,
    }
    # The failed file's chunks are searchable neither by keyword nor by vector, and the database does not know it.
    assert "zucchini.txt" not in sources_found(client, "zucchini summer gardens", "keyword")
    assert "zucchini.txt" not in sources_found(client, "Zucchini grows fast in summer gardens.", "vector")
    listed = client.get("/knowledge_base/list_files", params={"knowledge_base_name": KB}).json()["data"]
    assert "zucchini.txt" not in listed and "apple.txt" in listed
    assert not [p.name for p in store_folder(api_server).iterdir() if p.name.endswith(".tmp")]
    # The next successful save persists only what the database knows.
    assert upload(client, "cherry.txt", "Cherry trees need cold winters.").json()["code"] == 200
    saved = FaissStore.load(store_folder(api_server))
    assert set(saved.sources()) == {"apple.txt", "cherry.txt"}
    assert sources_found(client, "zucchini summer gardens", "keyword") <= {"apple.txt", "cherry.txt"}
