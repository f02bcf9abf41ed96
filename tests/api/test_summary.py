"""kb_summary_api: a clear error without an LLM; real summaries with the default model (slow)."""

from __future__ import annotations

import importlib.util
import json
import sqlite3

import httpx
import pytest

from tests.api.helpers import create_kb, sse_events, upload
from tests.helpers.api_server import start_api_server
from tests.helpers.processes import free_port

KB = "summary_kb"
TEXT = (
    "The Kestrel observatory sits on a mountain at 2400 metres. It opened in 1987 and its main telescope "
    "has a mirror of 3.6 metres. Astronomers there study distant galaxies and variable stars."
)


@pytest.fixture(scope="module")
def no_llm_server(tmp_path_factory):
    """An API server whose LLM gateway address has nothing listening."""
    env = {"CHATCHAT_FSCHAT_OPENAI_API__PORT": str(free_port())}
    with start_api_server(tmp_path_factory.mktemp("no_llm"), **env) as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            create_kb(http, KB)
            upload(http, KB, {"kestrel.txt": TEXT.encode()})
        yield server


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("summary_file_to_vector_store", {"file_name": "kestrel.txt"}),
        ("summary_doc_ids_to_vector_store", {"doc_ids": ["x"]}),
        ("recreate_summary_vector_store", {}),
    ],
)
def test_unreachable_llm_gives_a_clear_error(no_llm_server, path, body):
    response = httpx.post(
        f"{no_llm_server.url}/knowledge_base/kb_summary_api/{path}",
        json={"knowledge_base_name": KB, **body},
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    answer = response.json()
    gateway = no_llm_server.env["CHATCHAT_FSCHAT_OPENAI_API__PORT"]
    assert answer["code"] == 500 and answer["msg"].startswith("无法连接大模型服务") and gateway in answer["msg"]


def test_unknown_kb(no_llm_server):
    answer = httpx.post(
        f"{no_llm_server.url}/knowledge_base/kb_summary_api/summary_doc_ids_to_vector_store",
        json={"knowledge_base_name": "nope"},
    ).json()
    assert answer == {"code": 404, "msg": "未找到知识库 nope", "data": {}}


# ---- with the real default model (controller, worker, gateway) --------------------------------------


@pytest.fixture(scope="module")
def llm_api(request, tmp_path_factory):
    if importlib.util.find_spec("tests.helpers.stack") is None:
        pytest.skip("tests/helpers/stack.py (the LLM stack helper) is not available")
    stack = request.getfixturevalue("llm_stack")
    with start_api_server(tmp_path_factory.mktemp("summary_llm"), **stack.env) as server:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            create_kb(http, KB)
            upload(http, KB, {"kestrel.txt": TEXT.encode(), "second.txt": b"A short note about river otters."})
        yield server


def summary_rows(server) -> list[tuple]:
    with sqlite3.connect(server.kb_root / "info.db") as db:
        return db.execute("SELECT kb_name, summary_context, doc_ids, meta_data FROM summary_chunk").fetchall()


@pytest.mark.slow
def test_summaries_with_the_default_model(llm_api):
    url = f"{llm_api.url}/knowledge_base/kb_summary_api"
    common = {"knowledge_base_name": KB, "max_tokens": 48, "temperature": 0.0}
    response = httpx.post(
        f"{url}/summary_file_to_vector_store", json={**common, "file_name": "kestrel.txt"}, timeout=600
    )
    assert sse_events(response) == [{"code": 200, "msg": "kestrel.txt 总结完成", "doc": "kestrel.txt"}]
    [(kb, text, doc_ids, meta)] = summary_rows(llm_api)
    assert kb == KB and text.strip() and doc_ids and json.loads(meta)["file_name"] == "kestrel.txt"
    assert (llm_api.kb_root / KB / "summary_vector_store").is_dir()

    response = httpx.post(f"{url}/recreate_summary_vector_store", json=common, timeout=600)
    events = sse_events(response)
    assert [e["doc"] for e in events] == ["kestrel.txt", "second.txt"] and all(e["total"] == 2 for e in events)
    assert sorted(json.loads(row[3])["file_name"] for row in summary_rows(llm_api)) == ["kestrel.txt", "second.txt"]

    hits = httpx.post(
        f"{llm_api.url}/knowledge_base/search_docs", json={"knowledge_base_name": KB, "file_name": "kestrel.txt"}
    ).json()
    answer = httpx.post(
        f"{url}/summary_doc_ids_to_vector_store", json={**common, "doc_ids": [h["id"] for h in hits]}, timeout=600
    ).json()
    assert answer["code"] == 200 and answer["msg"] == "总结完成"
    [doc] = answer["data"]["summarize"]
    assert doc["page_content"].strip() and doc["metadata"]["doc_ids"] == [h["id"] for h in hits]
