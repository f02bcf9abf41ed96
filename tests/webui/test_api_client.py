"""The UI's API client against the real API server: results, streams, and readable errors."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.helpers.api_server import start_api_server
from tests.helpers.processes import free_port
from tests.webui.support import ALPHA_TEXT, BETA_TEXT
from webui_pages.api_client import ApiClient, AsyncApiClient, SSEDecoder, is_error_event


@pytest.fixture
def api(api_server):
    with ApiClient(api_server.url, timeout=120) as client:
        yield client


@pytest.fixture
def kb_name(api):
    name = f"client_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    yield name
    api.delete_knowledge_base(name)


def test_knowledge_base_round_trip(api, kb_name):
    assert kb_name in api.list_knowledge_bases().data
    again = api.create_knowledge_base(kb_name)
    assert again.code == 404 and again.msg == f"已存在同名知识库 {kb_name}"

    uploaded = api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode()), ("beta.md", BETA_TEXT.encode())], kb_name)
    assert uploaded.ok, uploaded.msg
    assert uploaded.data["failed_files"] == {}
    assert sorted(api.list_kb_docs(kb_name).data) == ["alpha.txt", "beta.md"]

    hits = api.search_kb_docs(kb_name, "When does the Zephyr warehouse open?", top_k=1)
    assert hits.ok and len(hits.data) == 1
    assert hits.data[0]["metadata"]["source"].endswith("alpha.txt")

    chunks = api.search_kb_docs(kb_name, file_name="beta.md")
    assert chunks.ok and chunks.data and all("Aurora" in c["page_content"] or c["page_content"] for c in chunks.data)

    download = api.download_kb_doc(kb_name, "alpha.txt")
    assert download.ok and download.data == ALPHA_TEXT.encode()
    assert "preview=true" in api.download_url(kb_name, "alpha.txt", preview=True)

    deleted = api.delete_kb_docs(kb_name, ["beta.md"], delete_content=True)
    assert deleted.ok and deleted.data["failed_files"] == {}
    assert api.list_kb_docs(kb_name).data == ["alpha.txt"]


def test_upload_failures_come_back_per_file(api, kb_name):
    assert api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode())], kb_name).ok
    again = api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode())], kb_name, override=False)
    assert again.ok
    assert "alpha.txt" in again.data["failed_files"]


def test_recreate_stream_reports_each_file(api, kb_name):
    api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode()), ("beta.md", BETA_TEXT.encode())], kb_name)
    events = list(api.recreate_vector_store(kb_name))
    progress = [e for e in events if e.get("code") == 200]
    assert [e["finished"] for e in progress] == [1, 2]
    assert {e["doc"] for e in progress} == {"alpha.txt", "beta.md"}
    assert all(e["total"] == 2 for e in progress)
    assert len(api.search_kb_docs(kb_name, "Aurora reviewers", top_k=3).data) >= 1


def test_update_chunk_by_id(api, kb_name):
    api.upload_kb_docs([("beta.md", BETA_TEXT.encode())], kb_name)
    chunk = api.search_kb_docs(kb_name, file_name="beta.md").data[0]
    result = api.update_docs_by_id(kb_name, {chunk["id"]: {"page_content": "Edited chunk text", "metadata": {}}})
    assert result.ok, result.msg
    texts = [c["page_content"] for c in api.search_kb_docs(kb_name, file_name="beta.md").data]
    assert "Edited chunk text" in texts


def test_server_errors_are_results_not_exceptions(api):
    missing = api.list_kb_docs("no_such_kb")
    assert missing.code == 404 and "no_such_kb" in missing.msg
    hostile = api.delete_knowledge_base("../../etc")
    assert not hostile.ok
    bad_type = api.search_kb_docs("x", "q", top_k="many")  # type: ignore[arg-type]
    assert bad_type.code == 422 and "top_k" in bad_type.msg


def test_chat_error_before_streaming_is_one_error_event(api):
    events = list(api.knowledge_base_chat("hello", "no_such_kb"))
    assert len(events) == 1 and is_error_event(events[0])
    assert events[0]["code"] == 404 and "no_such_kb" in events[0]["msg"]


def test_unreachable_server_gives_readable_errors():
    with ApiClient(f"http://127.0.0.1:{free_port()}", timeout=5) as api:
        result = api.list_knowledge_bases()
        assert result.code == 503 and "无法连接 API 服务器" in result.msg and not result
        events = list(api.chat_chat("hi"))
        assert len(events) == 1 and is_error_event(events[0])


def test_async_client_matches_sync(api_server, kb_name):
    async def scenario():
        async with AsyncApiClient(api_server.url, timeout=120) as client:
            names = await client.list_knowledge_bases()
            uploaded = await client.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode())], kb_name)
            progress = [e async for e in client.recreate_vector_store(kb_name)]
            return names, uploaded, progress

    names, uploaded, progress = asyncio.run(scenario())
    assert kb_name in names.data
    assert uploaded.ok and uploaded.data["failed_files"] == {}
    assert [e.get("doc") for e in progress] == ["alpha.txt"]


def test_sse_decoder_follows_the_standard_not_chunk_boundaries():
    decoder = SSEDecoder()
    lines = [": ping - 2024-01-01", 'data: {"answer": "a"}', "", 'data: {"docs":', "data: [1]}", "", "data: raw"]
    events = [e for line in lines if (e := decoder.feed_line(line)) is not None]
    events.append(decoder.finish())
    assert events == [{"answer": "a"}, {"docs": [1]}, {"text": "raw"}]


def test_api_key_is_sent_when_the_server_wants_one(tmp_path):
    with start_api_server(tmp_path, CHATCHAT_API_KEYS='["ui-secret"]') as keyed:
        with ApiClient(keyed.url, timeout=60, api_key="") as anonymous:
            refused = anonymous.list_knowledge_bases()
            assert refused.code == 401 and "API key" in refused.msg
        with ApiClient(keyed.url, timeout=60, api_key="ui-secret") as api:
            assert api.list_knowledge_bases().ok
            # The preview button's link is opened by the browser, which has no key: it is signed instead.
            assert api.create_knowledge_base("keyed_kb").ok
            assert api.upload_kb_docs([("note.txt", b"a note for the browser")], "keyed_kb").ok
            link = api.download_url("keyed_kb", "note.txt", preview=True)
            opened = httpx.get(link)
            assert opened.status_code == 200 and opened.content == b"a note for the browser"
            assert httpx.get(link.replace("note.txt", "other.txt")).status_code == 401
