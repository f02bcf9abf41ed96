"""JSON bodies with null, NaN and Infinity, over HTTP to a real server (and the mechanism in-process).

* NaN, Infinity and 1e309 are not JSON, but Python reads them: every route answers 422 naming the
  field, never 500, and such numbers cannot reach the code through fields without bounds (metadata).
* null means "the default" for every optional body field, as in Chatchat 0.2.x (its own client
  sends ``"conversation_id": null``), while required fields sent as null still get 422 and fields
  whose None means something else keep their null.
"""

from __future__ import annotations

import json

import pytest
from fastapi import Body, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from server import security
from server.json_body import JsonBodyMiddleware, null_default_keys
from tests.api.helpers import create_kb, sse_events, upload

KB = "null_nan_kb"


@pytest.fixture(scope="module")
def kb(client):
    create_kb(client, KB)
    upload(
        client,
        KB,
        {"animals.txt": b"Zebras have stripes.\n\nPenguins swim in cold water.\n"},
        chunk_size=40,
        chunk_overlap=0,
    )
    return KB


def post_raw(client, path: str, raw: str):
    return client.post(path, content=raw.encode(), headers={"content-type": "application/json"})


def strict_json(text: str):
    """Parse as a strict JSON client would: NaN or Infinity in an answer is an error."""

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ---- NaN and Infinity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "loc"),
    [
        ("/knowledge_base/search_docs", f'{{"knowledge_base_name": "{KB}", "score_threshold": NaN}}', ["score_threshold"]),
        ("/knowledge_base/search_docs", f'{{"knowledge_base_name": "{KB}", "score_threshold": 1e309}}', ["score_threshold"]),
        ("/knowledge_base/search_docs", f'{{"knowledge_base_name": "{KB}", "top_k": -Infinity}}', ["top_k"]),
        ("/knowledge_base/search_docs", f'{{"knowledge_base_name": "{KB}", "metadata": {{"page": NaN}}}}', ["metadata", "page"]),
        ("/knowledge_base/update_docs_by_id", f'{{"knowledge_base_name": "{KB}", "docs": {{"id1": {{"metadata": {{"x": [1, Infinity]}}}}}}}}', ["docs", "id1", "metadata", "x", 1]),
        ("/chat/chat", '{"query": "hi", "temperature": Infinity}', ["temperature"]),
        ("/chat/knowledge_base_chat", f'{{"query": "hi", "knowledge_base_name": "{KB}", "score_threshold": NaN, "return_direct": true}}', ["score_threshold"]),
        ("/chat/feedback", '{"message_id": "x", "score": NaN}', ["score"]),
        ("/other/embed_texts", '{"texts": ["a"], "to_query": NaN}', ["to_query"]),
    ],
)  # fmt: skip
def test_non_finite_numbers_get_422_naming_the_field(client, kb, path, raw, loc):
    response = post_raw(client, path, raw)

    assert response.status_code == 422, response.text
    detail = strict_json(response.text)["detail"]
    assert [error["loc"] for error in detail] == [["body", *loc]]
    assert detail[0]["msg"] == "Input should be a finite number"


def test_nan_in_metadata_is_never_stored(client, kb):
    hit = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": KB, "query": "zebra"}).json()[0]
    raw = json.dumps({"knowledge_base_name": KB, "docs": {hit["id"]: {"page_content": "x", "metadata": {"v": 1}}}})
    response = post_raw(client, "/knowledge_base/update_docs_by_id", raw.replace('"v": 1', '"v": NaN'))
    assert response.status_code == 422

    hits = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": KB, "query": "zebra"})
    assert hits.status_code == 200 and strict_json(hits.text)[0]["page_content"] == hit["page_content"]


def test_the_422_handler_writes_non_finite_inputs_as_strings():
    app = FastAPI()

    @app.get("/boom")
    def boom():
        raise RequestValidationError([{"type": "x", "loc": ("body", "f"), "msg": "m", "input": [float("nan"), -1e309]}])

    security.install(app)
    response = TestClient(app).get("/boom")

    assert response.status_code == 422
    assert strict_json(response.text)["detail"][0]["input"] == ["NaN", "-Infinity"]


# ---- null as the default ------------------------------------------------------------------------------


def test_null_means_the_default_on_knowledge_base_routes(client, kb):
    nulls = dict.fromkeys(["query", "top_k", "score_threshold", "file_name", "metadata", "search_mode"])
    with_nulls = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": KB, **nulls})
    plain = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": KB})
    assert with_nulls.status_code == 200, with_nulls.text
    assert with_nulls.json() == plain.json()

    created = client.post(
        "/knowledge_base/create_knowledge_base",
        json={"knowledge_base_name": "null_kb", "vector_store_type": None, "embed_model": None},
    ).json()
    assert created["code"] == 200, created
    template = client.post("/server/get_prompt_template", json={"type": None, "name": None})
    assert template.status_code == 200 and template.json() == client.post("/server/get_prompt_template").json()


def test_chatchat_clients_chat_payloads_with_nulls_are_accepted(client, kb):
    # What 0.2.10's ApiRequest.knowledge_base_chat sends (model_name null), answered without a model.
    payload = {
        "query": "zebra",
        "knowledge_base_name": KB,
        "top_k": None,
        "score_threshold": None,
        "history": None,
        "stream": None,
        "model_name": None,
        "temperature": None,
        "max_tokens": None,
        "prompt_name": None,
        "conversation_id": None,
        "return_direct": True,
    }
    response = client.post("/chat/knowledge_base_chat", json=payload)
    assert response.status_code == 200, response.text
    (event,) = sse_events(response)
    assert event["answer"] == "" and "Zebras" in event["docs"][0]

    # ApiRequest.chat_chat("你好"): no model runs here, so the route gets past validation to the gateway.
    chat = {"query": "你好", "conversation_id": None, "history_len": -1, "history": [], "stream": True}
    answer = client.post("/chat/chat", json={**chat, "model_name": None, "temperature": None, "max_tokens": None})
    assert answer.status_code == 200, answer.text
    assert answer.json()["code"] == 500 and "大模型服务" in answer.json()["msg"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/knowledge_base/search_docs", {"knowledge_base_name": None}, "knowledge_base_name"),
        ("/chat/knowledge_base_chat", {"query": None, "knowledge_base_name": KB, "return_direct": True}, "query"),
        ("/chat/chat", {"query": None}, "query"),
        ("/other/embed_texts", {"texts": None}, "texts"),
    ],
)
def test_required_fields_sent_as_null_are_still_422(client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


def test_a_null_with_its_own_meaning_is_kept():
    from server.chat.router import completion_router
    from server.knowledge_base.router import router as kb_router

    routes = {route.path: route for route in [*completion_router.routes, *kb_router.routes]}
    # max_tokens: null asks for MAX_TOKENS from settings, not the route's default of 1024.
    assert "max_tokens" not in null_default_keys(routes["/other/completion"])
    assert {"model_name", "conversation_id", "temperature"} <= null_default_keys(routes["/other/completion"])
    assert "max_tokens" not in null_default_keys(routes["/kb_summary_api/summary_file_to_vector_store"])
    assert "search_mode" not in null_default_keys(routes["/search_docs"])


def test_null_handling_in_process():
    app = FastAPI()
    app.add_middleware(JsonBodyMiddleware)

    @app.post("/echo")
    def echo(q: str = Body(), name: str = Body("x"), limit: int | None = Body(5), tags: list[str] = Body([])):  # noqa: B006
        return {"q": q, "name": name, "limit": limit, "tags": tags}

    http = TestClient(app)
    answer = http.post("/echo", json={"q": "a", "name": None, "limit": None, "tags": None})
    assert answer.json() == {"q": "a", "name": "x", "limit": None, "tags": []}
    assert http.post("/echo", json={"q": None}).status_code == 422
    # Bodies that are not JSON objects, or not JSON at all, are left to FastAPI.
    assert http.post("/echo", content=b"[null]", headers={"content-type": "application/json"}).status_code == 422
    assert http.post("/echo", content=b"{bad", headers={"content-type": "application/json"}).status_code == 422
