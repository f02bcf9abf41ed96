"""Rebuild progress as Chatchat's scripts read it, and custom docs for names that are not files, over HTTP."""

from __future__ import annotations

import json
import time

import pytest

from tests.api.helpers import create_kb, upload

REBUILD_KB = "slow_rebuild_kb"
CUSTOM_KB = "custom_docs_kb"
FILES = 5
SENTENCES = 160  # per file; enough for the rebuild to take a few seconds of embedding on a CPU

ANIMALS = ["otters", "herons", "badgers", "lynxes", "ravens", "bison", "geckos", "moles"]
PLACES = ["the river", "a quarry", "the old mill", "a marsh", "the ridge", "a hedgerow"]


def _text(file_index: int) -> str:
    # Every sentence differs, so the embedder cannot answer any chunk from memory.
    return "\n\n".join(
        f"Survey {file_index}-{i}: {i % 7 + 2} {ANIMALS[i % len(ANIMALS)]} were counted near "
        f"{PLACES[(i + file_index) % len(PLACES)]} on day {i * 3 + file_index}."
        for i in range(SENTENCES)
    )


@pytest.fixture(scope="module")
def rebuild_kb(client, api_server):
    create_kb(client, REBUILD_KB)
    content = api_server.kb_root / REBUILD_KB / "content"
    for index in range(FILES):
        (content / f"survey_{index}.txt").write_text(_text(index))
    # A first query loads the embedding weights (they load at the first embed), so the timing below is the
    # rebuild's own.
    client.post("/knowledge_base/search_docs", json={"knowledge_base_name": REBUILD_KB, "query": "warm up"})
    return REBUILD_KB


def read_like_chatchat(response) -> list[tuple[float, dict]]:
    """Each network chunk through json.loads(chunk[6:]), as Chatchat's tests do, with its arrival time."""
    events = []
    for chunk in response.iter_text():
        events.append((time.monotonic(), json.loads(chunk[6:])))  # a `: ping` comment would fail here
    return events


def test_rebuild_events_follow_the_work_and_every_chunk_parses(client, rebuild_kb):
    body = {"knowledge_base_name": rebuild_kb, "chunk_size": 60, "chunk_overlap": 0}
    started = time.monotonic()
    with client.stream("POST", "/knowledge_base/recreate_vector_store", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_like_chatchat(response)
        ended = time.monotonic()
    assert [event["finished"] for _, event in events] == list(range(1, FILES + 1))
    assert all(event["code"] == 200 and event["total"] == FILES for _, event in events)
    duration = ended - started
    first, last = events[0][0] - started, events[-1][0] - started
    if duration < 1.0:  # e.g. embedding on a GPU: nothing is silent for long enough to measure the spread
        pytest.skip(f"the rebuild took {duration:.2f} s: too little work to see the timing")
    # Each file's event comes once it is embedded and stored: spread over the run, the last near its end.
    assert last >= 0.8 * duration, f"last event at {last:.2f} s of {duration:.2f} s"
    assert last - first >= 0.4 * duration, f"events from {first:.2f} s to {last:.2f} s of {duration:.2f} s"
    hits = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": rebuild_kb, "query": "badgers near the marsh"}
    ).json()
    assert hits and hits[0]["metadata"]["source"].startswith("survey_")


def test_progress_and_chat_streams_send_no_keep_alive_comments():
    # A ping every 15 s would only show in a stream longer than this test may take, so check the setting.
    from server.chat.common import event_stream as chat_stream
    from server.knowledge_base.router import event_stream

    async def nothing():
        yield "{}"

    assert event_stream(nothing()).ping_interval == 0
    assert chat_stream(nothing()).ping_interval == 0


# ---- custom docs ------------------------------------------------------------------------------------


def files_of(client, kb: str) -> list[str]:
    answer = client.get("/knowledge_base/list_files", params={"knowledge_base_name": kb}).json()
    assert answer["code"] == 200, answer
    return answer["data"]


def search(client, kb: str, **body) -> list[dict]:
    response = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": kb, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_custom_docs_for_a_name_that_is_not_a_file(client, api_server):
    create_kb(client, CUSTOM_KB)
    faq = [{"page_content": "Custom docs: the lighthouse keeper feeds the seagulls every Tuesday.", "metadata": {}}]
    answer = upload(
        client,
        CUSTOM_KB,
        {"guide.txt": b"The guide explains how to repair a bicycle chain."},
        override="true",
        docs=json.dumps({"FAQ.MD": faq}),
    )
    assert answer == {"code": 200, "msg": "文件上传与向量化完成", "data": {"failed_files": {}}}
    assert set(files_of(client, CUSTOM_KB)) == {"guide.txt", "FAQ.MD"}
    assert not (api_server.kb_root / CUSTOM_KB / "content" / "FAQ.MD").exists()
    details = client.get("/knowledge_base/list_file_details", params={"knowledge_base_name": CUSTOM_KB}).json()
    row = next(row for row in details["data"] if row["file_name"] == "FAQ.MD")
    assert row["custom_docs"] and row["in_db"] and not row["in_folder"] and row["docs_count"] == 1

    hits = search(client, CUSTOM_KB, query="who feeds the seagulls", top_k=1)
    assert hits[0]["metadata"]["source"] == "FAQ.MD" and "lighthouse keeper" in hits[0]["page_content"]
    listed = search(client, CUSTOM_KB, file_name="FAQ.MD")
    assert [doc["page_content"] for doc in listed] == [faq[0]["page_content"]]

    notes = [{"page_content": "Custom note: the ferry leaves the harbour at dawn.", "metadata": {"page": 1}}]
    body = {"knowledge_base_name": CUSTOM_KB, "file_names": [], "docs": json.dumps({"notes/ferry.md": notes})}
    answer = client.post("/knowledge_base/update_docs", json=body).json()
    assert answer == {"code": 200, "msg": "更新文档完成", "data": {"failed_files": {}}}
    assert "notes/ferry.md" in files_of(client, CUSTOM_KB)
    hit = search(client, CUSTOM_KB, query="when does the ferry leave", top_k=1)[0]
    assert hit["metadata"]["source"] == "notes/ferry.md" and hit["metadata"]["page"] == 1

    body = {"knowledge_base_name": CUSTOM_KB, "file_names": ["FAQ.MD", "notes/ferry.md"], "delete_content": True}
    answer = client.post("/knowledge_base/delete_docs", json=body).json()
    assert answer == {"code": 200, "msg": "文件删除完成", "data": {"failed_files": {}}}
    assert files_of(client, CUSTOM_KB) == ["guide.txt"]
    remaining = search(client, CUSTOM_KB, query="seagulls and the ferry", top_k=5)
    assert {doc["metadata"]["source"] for doc in remaining} == {"guide.txt"}
    assert search(client, CUSTOM_KB, file_name="FAQ.MD") == []


def test_a_rebuild_left_by_its_client_cannot_bring_a_deleted_knowledge_base_back(client, api_server):
    # Chatchat 0.2.x: the abandoned rebuild wrote vector_store/ back after the delete, the name could not be
    # deleted again (404), and a new knowledge base of that name returned the deleted documents.
    name = "abandoned_rebuild_kb"
    create_kb(client, name)
    content = api_server.kb_root / name / "content"
    for index in range(FILES * 2):
        (content / f"survey_{index}.txt").write_text(_text(index))
    body = {"knowledge_base_name": name, "chunk_size": 60, "chunk_overlap": 0}
    with client.stream("POST", "/knowledge_base/recreate_vector_store", json=body) as response:
        first = json.loads(next(response.iter_text())[6:])
    assert first["finished"] == 1  # the client goes away after one file; the rebuild runs on in the server
    deleted = client.post("/knowledge_base/delete_knowledge_base", json=name).json()
    assert deleted["code"] == 200, deleted

    deadline = time.monotonic() + 180
    while "was deleted while this operation ran" not in api_server.log(400) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "was deleted while this operation ran" in api_server.log(400), api_server.log()
    assert not (api_server.kb_root / name).exists()
    listed = client.get("/knowledge_base/list_knowledge_bases").json()["data"]
    assert name not in listed

    create_kb(client, name)
    files = client.get("/knowledge_base/list_files", params={"knowledge_base_name": name}).json()
    assert files["data"] == []
    hits = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": name, "query": "otters"}).json()
    assert hits == []
