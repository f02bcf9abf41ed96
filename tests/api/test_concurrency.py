"""Ingestion runs off the event loop; concurrent uploads and deletes during searches lose nothing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.api.helpers import create_kb, upload


def paragraph(topic: str, index: int) -> str:
    return f"Paragraph {index} about {topic}: " + " ".join(f"{topic}{index}word{j}" for j in range(40))


def test_concurrent_uploads_to_one_kb_lose_nothing(client, api_server):
    create_kb(client, "busy_kb")
    topics = ["rivers", "forests", "deserts", "oceans", "glaciers", "volcanoes"]

    def send(topic: str) -> dict:
        with httpx.Client(base_url=api_server.url, timeout=300) as own:
            return upload(own, "busy_kb", {f"{topic}.txt": paragraph(topic, 0).encode()})

    with ThreadPoolExecutor(len(topics)) as pool:
        answers = list(pool.map(send, topics))
    assert all(a["code"] == 200 and a["data"]["failed_files"] == {} for a in answers), answers
    files = client.get("/knowledge_base/list_files", params={"knowledge_base_name": "busy_kb"}).json()["data"]
    assert sorted(files) == sorted(f"{t}.txt" for t in topics)
    for topic in topics:
        hits = client.post(
            "/knowledge_base/search_docs", json={"knowledge_base_name": "busy_kb", "file_name": f"{topic}.txt"}
        ).json()
        assert hits and topic in hits[0]["page_content"]
    hits = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": "busy_kb", "query": "x", "top_k": 100}
    ).json()
    assert {h["metadata"]["source"] for h in hits} == {f"{t}.txt" for t in topics}


def test_search_keeps_answering_during_a_long_upload(client, api_server):
    create_kb(client, "long_kb")
    create_kb(client, "quick_kb")
    upload(client, "quick_kb", {"q.txt": b"Quick facts about the moon and its craters."})
    # Big enough that the upload outlasts several search rounds even when each search waits on the busy CPU.
    big = "\n\n".join(paragraph("archive", i) for i in range(150)).encode()
    result: dict = {}

    def long_upload() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=api_server.url, timeout=600) as own:
            result["answer"] = upload(own, "long_kb", {"big.txt": big}, chunk_size=200, chunk_overlap=0)
        result["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=long_upload)
    worker.start()
    time.sleep(0.5)
    latencies = []
    searches = []
    while worker.is_alive():
        started = time.monotonic()
        response = client.get("/knowledge_base/list_knowledge_bases")
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200
        started = time.monotonic()
        hits = client.post("/knowledge_base/search_docs", json={"knowledge_base_name": "quick_kb", "query": "moon"})
        searches.append(time.monotonic() - started)
        assert hits.status_code == 200 and hits.json()[0]["metadata"]["source"] == "q.txt"
        time.sleep(0.2)
    worker.join()
    assert result["answer"]["data"]["failed_files"] == {}
    assert result["seconds"] > 3, "the upload was too quick to show anything"
    assert len(latencies) >= 3 and max(latencies) < min(2.5, result["seconds"] / 2), (latencies, result["seconds"])
    # A search shares the CPU with the embedding batches, so it may be slower, but it must not queue behind the upload.
    assert max(searches) < result["seconds"] / 2, (searches, result["seconds"])


def test_deletes_during_searches_give_no_server_errors(client, api_server):
    create_kb(client, "churn_kb")
    upload(client, "churn_kb", {f"f{i}.txt": paragraph("churn", i).encode() for i in range(6)})
    stop = threading.Event()
    statuses: list[int] = []

    def search_loop() -> None:
        with httpx.Client(base_url=api_server.url, timeout=120) as own:
            while not stop.is_set():
                response = own.post(
                    "/knowledge_base/search_docs",
                    json={"knowledge_base_name": "churn_kb", "query": "churn", "top_k": 3},
                )
                statuses.append(response.status_code)
                assert isinstance(response.json(), list)

    searchers = [threading.Thread(target=search_loop) for _ in range(3)]
    for thread in searchers:
        thread.start()
    for i in range(6):
        body = {"knowledge_base_name": "churn_kb", "file_names": [f"f{i}.txt"], "delete_content": True}
        assert client.post("/knowledge_base/delete_docs", json=body).json()["data"]["failed_files"] == {}
    assert client.post("/knowledge_base/delete_knowledge_base", json="churn_kb").json()["code"] == 200
    time.sleep(0.5)
    stop.set()
    for thread in searchers:
        thread.join()
    assert statuses and set(statuses) == {200}
