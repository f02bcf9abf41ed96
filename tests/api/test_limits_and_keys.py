"""Upload size limits (413 without filling the disk), API keys (401) and CORS when enabled."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from server.signed_links import signed_params

FILE_LIMIT = 2000
REQUEST_LIMIT = 60_000
SERVER_ENV = {
    "CHATCHAT_MAX_UPLOAD_FILE_SIZE": str(FILE_LIMIT),
    "CHATCHAT_MAX_UPLOAD_REQUEST_SIZE": str(REQUEST_LIMIT),
    "CHATCHAT_API_KEYS": '["key-one", "key-two"]',
    "CHATCHAT_OPEN_CROSS_DOMAIN": "true",
}
KB = "limits_kb"
AUTH = {"Authorization": "Bearer key-two"}


@pytest.fixture(scope="module")
def authed(api_server):
    with httpx.Client(base_url=api_server.url, timeout=120.0, headers=AUTH) as http:
        answer = http.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": KB}).json()
        assert answer["code"] == 200, answer
        yield http


def content_files(api_server) -> list[str]:
    folder = api_server.kb_root / KB / "content"
    return sorted(p.name for p in folder.rglob("*"))


# ---- API keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-one"}, {"Authorization": "Basic a2V5LW9uZQ=="},
     {"Authorization": "Bearer  x"}, {"Authorization": "Bearer key-one-and-more"}],
)  # fmt: skip
def test_routes_need_a_valid_key(api_server, headers):
    for method, path in [
        ("GET", "/knowledge_base/list_knowledge_bases"),
        ("POST", "/knowledge_base/search_docs"),
        ("POST", "/server/configs"),
        ("POST", "/other/embed_texts"),
        ("GET", "/knowledge_base/download_doc"),
    ]:
        response = httpx.request(method, api_server.url + path, headers=headers, json={})
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_docs_stay_open(api_server):
    for path in ("/health", "/docs", "/openapi.json", "/redoc"):
        assert httpx.get(api_server.url + path).status_code == 200, path
    assert httpx.get(api_server.url + "/", follow_redirects=False).status_code == 307


def test_every_configured_key_works(api_server, authed):
    for key in ("key-one", "key-two"):
        response = httpx.get(
            api_server.url + "/knowledge_base/list_knowledge_bases", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200 and KB in response.json()["data"]


def test_cors_when_enabled(api_server):
    response = httpx.options(
        api_server.url + "/knowledge_base/list_knowledge_bases",
        headers={"Origin": "http://ui.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] in ("*", "http://ui.example")


# ---- signed download links ------------------------------------------------------------------------


LINKS_KB = "links_kb"


@pytest.fixture(scope="module")
def two_files(authed):
    created = authed.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": LINKS_KB}).json()
    assert created["code"] == 200, created
    files = [("files", ("open.txt", b"the file a link was signed for")), ("files", ("other.txt", b"another file"))]
    answer = authed.post("/knowledge_base/upload_docs", data={"knowledge_base_name": LINKS_KB}, files=files).json()
    assert answer["code"] == 200 and answer["data"]["failed_files"] == {}, answer


def download(api_server, query: dict) -> httpx.Response:
    return httpx.get(api_server.url + "/knowledge_base/download_doc", params=query)  # no Authorization header


def test_a_signed_link_opens_its_file_without_a_key(api_server, two_files):
    query = {
        "knowledge_base_name": LINKS_KB,
        "file_name": "open.txt",
        **signed_params("key-one", LINKS_KB, "open.txt", 60),
    }
    response = download(api_server, query)
    assert response.status_code == 200 and response.content == b"the file a link was signed for"
    preview = download(api_server, {**query, "preview": "true"})  # the UI adds preview to a signed link
    assert preview.status_code == 200 and preview.headers["content-disposition"].startswith("inline")


def test_a_signed_link_opens_nothing_else(api_server, two_files):
    signed = signed_params("key-two", LINKS_KB, "open.txt", 60)
    refused = [
        {"knowledge_base_name": LINKS_KB, "file_name": "other.txt", **signed},  # another file
        {
            "knowledge_base_name": LINKS_KB,
            "file_name": "open.txt",
            **signed_params("key-two", LINKS_KB, "open.txt", -5),
        },  # expired
        {
            "knowledge_base_name": LINKS_KB,
            "file_name": "open.txt",
            **signed_params("not-a-key", LINKS_KB, "open.txt", 60),
        },
        {"knowledge_base_name": LINKS_KB, "file_name": "open.txt", "expires": signed["expires"]},  # unsigned
        {
            "knowledge_base_name": LINKS_KB,
            "file_name": "open.txt",
            "expires": "9999999999",
            "signature": signed["signature"],
        },
    ]
    for query in refused:
        assert download(api_server, query).status_code == 401, query
    # Two file names: the check must not pass on one and the route serve the other.
    twice = f"knowledge_base_name={LINKS_KB}&file_name=open.txt&file_name=other.txt&expires={signed['expires']}"
    response = httpx.get(f"{api_server.url}/knowledge_base/download_doc?{twice}&signature={signed['signature']}")
    assert response.status_code == 401
    # A signature opens download_doc only, not the other routes.
    listing = httpx.get(
        api_server.url + "/knowledge_base/list_files", params={"knowledge_base_name": LINKS_KB, **signed}
    )
    assert listing.status_code == 401


def test_source_links_in_answers_are_signed(api_server, authed, two_files):
    body = {"query": "which file was the link signed for", "knowledge_base_name": LINKS_KB, "return_direct": True,
            "stream": False, "score_threshold": 1.0}  # fmt: skip
    reply = authed.post("/chat/knowledge_base_chat", json=body).text  # one SSE event, as Chatchat sends it
    answer = json.loads(reply.strip().removeprefix("data: "))
    links = [re.search(r"\]\((http[^)]+)\)", doc).group(1) for doc in answer["docs"]]
    assert links and all("signature=" in link for link in links)
    opened = [httpx.get(link) for link in links]
    assert all(r.status_code == 200 for r in opened), [r.text for r in opened]
    assert b"the file a link was signed for" in [r.content for r in opened]


# ---- upload limits --------------------------------------------------------------------------------


def test_file_over_the_per_file_limit_gets_413_and_is_not_written(api_server, authed):
    files = [("files", ("small.txt", b"fine " * 10)), ("files", ("big.txt", b"x" * (FILE_LIMIT + 1)))]
    response = authed.post("/knowledge_base/upload_docs", data={"knowledge_base_name": KB}, files=files)
    assert response.status_code == 413 and response.json()["code"] == 413 and "big.txt" in response.json()["msg"]
    assert content_files(api_server) == []
    response = authed.post("/knowledge_base/upload_temp_docs", files=files)
    assert response.status_code == 413


def test_file_at_the_limit_is_accepted(api_server, authed):
    files = [("files", ("exact.txt", b"y" * FILE_LIMIT))]
    response = authed.post("/knowledge_base/upload_docs", data={"knowledge_base_name": KB}, files=files)
    assert response.status_code == 200 and response.json()["code"] == 200
    assert content_files(api_server) == ["exact.txt"]


def test_request_over_the_limit_is_refused_from_its_length(api_server, authed):
    files = [("files", (f"part{i}.txt", b"z" * 1500)) for i in range(50)]  # each file fine, the request not
    response = authed.post("/knowledge_base/upload_docs", data={"knowledge_base_name": KB}, files=files)
    assert response.status_code == 413 and response.json()["code"] == 413
    assert "part0.txt" not in content_files(api_server)


def test_streamed_request_without_length_is_cut_at_the_limit(api_server, authed):
    sent = 0

    def endless_body():
        nonlocal sent
        boundary = b"--XyZ\r\n"
        yield boundary + b'Content-Disposition: form-data; name="knowledge_base_name"\r\n\r\n' + KB.encode() + b"\r\n"
        yield boundary + b'Content-Disposition: form-data; name="files"; filename="huge.txt"\r\n\r\n'
        while sent < 10 * REQUEST_LIMIT:
            sent += 8192
            yield b"a" * 8192

    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=XyZ"}
    try:
        response = httpx.post(
            api_server.url + "/knowledge_base/upload_docs", content=endless_body(), headers=headers, timeout=60
        )
        assert response.status_code == 413
    except httpx.HTTPError:
        pass  # the server may close the connection while we are still sending: also a refusal
    assert "huge.txt" not in content_files(api_server)
    assert authed.get("/health").status_code == 200


def test_json_body_over_the_limit(api_server, authed):
    body = {"knowledge_base_name": KB, "query": "q" * (REQUEST_LIMIT + 10)}
    response = authed.post("/knowledge_base/search_docs", json=body)
    assert response.status_code == 413
