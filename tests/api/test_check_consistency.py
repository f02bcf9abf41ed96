"""POST /knowledge_base/check_consistency: report, then repair, drift made by hand on a running server."""

from __future__ import annotations

from tests.api.helpers import create_kb, upload

KB = "drifting_kb"


def check(client, **body) -> dict:
    response = client.post("/knowledge_base/check_consistency", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_check_then_repair_over_http(client, api_server):
    create_kb(client, KB)
    upload(client, KB, {"kept.md": b"Moles dig tunnels.", "gone.md": b"Geckos climb glass."})
    content = api_server.kb_root / KB / "content"
    (content / "gone.md").unlink()
    (content / "new.md").write_text("Bison graze on the prairie.", encoding="utf-8")

    found = check(client, knowledge_base_name=KB)
    assert found["msg"] == "发现不一致，可修复"
    [report] = found["data"]
    assert {(p["kind"], p["file_name"]) for p in report["problems"]} == {
        ("file_not_on_disk", "gone.md"),
        ("file_not_listed", "new.md"),
    }
    assert report["remaining"] is None

    repaired = check(client, knowledge_base_name=KB, repair=True)
    assert repaired["msg"] == "修复完成"
    assert repaired["data"][0]["remaining"] == []
    listed = client.get("/knowledge_base/list_files", params={"knowledge_base_name": KB}).json()["data"]
    assert sorted(listed) == ["kept.md", "new.md"]
    assert check(client)["msg"] == "未发现问题"  # every knowledge base


def test_unknown_and_hostile_names(client):
    assert check(client, knowledge_base_name="no_such_kb")["code"] == 404
    response = client.post("/knowledge_base/check_consistency", json={"knowledge_base_name": "../etc"})
    assert response.json()["code"] == 403
