"""Routes: duplicate uploads are reported (or refused), a knowledge base whose model changed is refused."""

from __future__ import annotations

import json
import sqlite3

import httpx

from tests.api.helpers import create_kb, upload
from tests.helpers.api_server import start_api_server

GUIDE = b"# Depot\n\nThe north depot opens at six and closes at ten."
OTHER = b"Helmets are required in every loading bay."


def search(client, kb_name, query="when does the depot open"):
    body = {"knowledge_base_name": kb_name, "query": query, "top_k": 10}
    return client.post("/knowledge_base/search_docs", json=body)


def test_the_same_content_under_another_name_is_reported_and_ingested_once(client):
    create_kb(client, "dup_kb")
    first = upload(client, "dup_kb", {"guide.md": GUIDE})
    assert first["data"] == {"failed_files": {}}  # Chatchat's envelope, unchanged when there are no copies
    answer = upload(client, "dup_kb", {"copy.md": GUIDE, "other.md": OTHER, "copy2.md": OTHER})
    assert answer["code"] == 200
    assert answer["data"] == {
        "failed_files": {},
        "duplicate_files": {"copy.md": "guide.md", "copy2.md": "other.md"},
    }
    files = client.get("/knowledge_base/list_files", params={"knowledge_base_name": "dup_kb"}).json()["data"]
    assert sorted(files) == ["guide.md", "other.md"]
    sources = [hit["metadata"]["source"] for hit in search(client, "dup_kb").json()]
    assert sources.count("guide.md") == 1 and "copy.md" not in sources
    details = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": "dup_kb"}).json()
    rows = {row["file_name"]: row for row in details["data"]}
    assert rows["copy.md"]["in_folder"] and not rows["copy.md"]["in_db"] and "guide.md" in rows["copy.md"]["error"]


def test_a_changed_model_is_refused_with_the_fix(client, api_server):
    create_kb(client, "drift_kb")
    upload(client, "drift_kb", {"guide.md": GUIDE})
    assert search(client, "drift_kb").status_code == 200
    # As if the vectors had been made by other weights under the same model name.
    with sqlite3.connect(api_server.kb_root / "info.db") as db:
        (raw,) = db.execute("SELECT embed_fingerprint FROM knowledge_base WHERE kb_name = 'drift_kb'").fetchone()
        stored = {**json.loads(raw), "weights": "0" * 64}
        db.execute("UPDATE knowledge_base SET embed_fingerprint = ? WHERE kb_name = 'drift_kb'", (json.dumps(stored),))
    refused = search(client, "drift_kb")
    assert refused.status_code == 409
    assert "python init_database.py --recreate-vs --kb-name drift_kb" in refused.json()["msg"]
    answer = client.post("/knowledge_base/upload_docs", data={"knowledge_base_name": "drift_kb"},
                         files=[("files", ("more.md", OTHER))])  # fmt: skip
    assert answer.status_code == 409
    rebuilt = client.post("/knowledge_base/recreate_vector_store", json={"knowledge_base_name": "drift_kb"})
    assert all(event.get("code", 200) == 200 for event in map(json.loads, _data_lines(rebuilt.text)))
    assert search(client, "drift_kb").status_code == 200


def _data_lines(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_refuse_policy_does_not_save_the_copy(tmp_path):
    with (
        start_api_server(tmp_path, CHATCHAT_DUPLICATE_FILES="refuse") as server,
        httpx.Client(base_url=server.url, timeout=180.0) as http,
    ):
        create_kb(http, "strict_kb")
        upload(http, "strict_kb", {"guide.md": GUIDE})
        answer = upload(http, "strict_kb", {"copy.md": GUIDE, "new.md": OTHER})
        assert list(answer["data"]["failed_files"]) == ["copy.md"]
        assert "guide.md" in answer["data"]["failed_files"]["copy.md"]
        content = server.kb_root / "strict_kb" / "content"
        assert sorted(p.name for p in content.iterdir()) == ["guide.md", "new.md"]
