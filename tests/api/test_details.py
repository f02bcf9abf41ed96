"""Extension routes the web UI uses: knowledge-base details and per-file details."""

from __future__ import annotations

from tests.api.helpers import create_kb, upload


def test_knowledge_base_details_carry_info_and_model(client):
    create_kb(client, "details_kb")
    client.post("/knowledge_base/update_info", json={"knowledge_base_name": "details_kb", "kb_info": "运维手册"})
    data = client.get("/knowledge_base/list_knowledge_base_details").json()["data"]
    row = next(kb for kb in data if kb["kb_name"] == "details_kb")
    assert row["kb_info"] == "运维手册"
    assert row["vs_type"] == "faiss" and row["embed_model"]


def test_file_details_show_ingested_failed_and_folder_only_files(client, api_server):
    create_kb(client, "files_kb")
    upload(client, "files_kb", {"guide.md": b"# Guide\n\nThe depot opens at six.", "bad.txt": b"\x00\x01\x02"})
    (api_server.kb_root / "files_kb" / "content" / "later.txt").write_text("Not ingested yet.", encoding="utf-8")

    body = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": "files_kb"}).json()
    assert body["code"] == 200
    rows = {row["file_name"]: row for row in body["data"]}
    assert rows["guide.md"]["in_db"] and rows["guide.md"]["docs_count"] >= 1
    assert rows["guide.md"]["document_loader"] and rows["guide.md"]["file_size"] > 0
    assert not rows["bad.txt"]["in_db"] and "binary" in rows["bad.txt"]["error"]
    assert rows["later.txt"]["in_folder"] and not rows["later.txt"]["in_db"]


def test_file_details_refuse_hostile_and_unknown_names(client):
    hostile = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": "../.."}).json()
    assert hostile["code"] == 403 and hostile["data"] == []
    missing = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": "nope"}).json()
    assert missing["code"] == 404
