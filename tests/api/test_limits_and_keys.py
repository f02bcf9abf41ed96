"""Upload size limits (413 without filling the disk), API keys (401) and CORS when enabled."""

from __future__ import annotations

import httpx
import pytest

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
