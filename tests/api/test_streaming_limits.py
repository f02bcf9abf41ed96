"""MAX_UPLOAD_FILE_SIZE is enforced while a multipart upload streams in, not after the whole body was read.

The declared request (50 MB) is under MAX_UPLOAD_REQUEST_SIZE (1 GB by default); only its second file is
over the per-file limit. The server must answer 413 before the client has sent the body, write nothing to
content/ and leave no spooled upload behind.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.helpers import create_kb

FILE_LIMIT = 100_000
DECLARED = 50 * 1024 * 1024
SPOOL_DIR = Path(tempfile.mkdtemp(prefix="chatkb_spool_"))  # the server's TMPDIR: where Starlette spools files
SERVER_ENV = {
    "CHATCHAT_MAX_UPLOAD_FILE_SIZE": str(FILE_LIMIT),
    "CHATCHAT_MAX_EVAL_QUESTIONS_FILE_SIZE": str(FILE_LIMIT),
    "TMPDIR": str(SPOOL_DIR),
}
KB = "streaming_kb"
BOUNDARY = "streamlimit"
UPLOAD_ROUTES = ["/knowledge_base/upload_docs", "/knowledge_base/upload_temp_docs"]


@pytest.fixture(scope="module", autouse=True)
def remove_temp_dir():
    yield  # set up first, so torn down after the server stopped
    shutil.rmtree(SPOOL_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def kb(client):
    create_kb(client, KB)
    return KB


def body_start(big_name: str) -> bytes:
    """The form field, a small file under the limit, and the headers of the big file."""
    dash = f"--{BOUNDARY}\r\n".encode()
    return (
        dash
        + b'Content-Disposition: form-data; name="knowledge_base_name"\r\n\r\n'
        + KB.encode()
        + b"\r\n"
        + dash
        + b'Content-Disposition: form-data; name="files"; filename="small.txt"\r\n\r\n'
        + b"small file " * 100
        + b"\r\n"
        + dash
        + f'Content-Disposition: form-data; name="files"; filename="{big_name}"\r\n'.encode()
        + b"Content-Type: text/plain\r\n\r\n"
    )


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes, or what came within ``timeout`` seconds."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        received += data
    return received


def content_files(api_server) -> list[str]:
    folder = api_server.kb_root / KB / "content"
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def spooled_files() -> list[str]:
    """Files Starlette's SpooledTemporaryFile put in TMPDIR (torch keeps a cache folder there too)."""
    return sorted(p.name for p in SPOOL_DIR.iterdir() if p.is_file())


@pytest.mark.parametrize("route", [*UPLOAD_ROUTES, "/knowledge_base/evaluate_retrieval"])
def test_a_file_over_the_limit_is_refused_before_the_body_is_complete(api_server, kb, route):
    """Send a bit more than the limit of the big file, then nothing: the declared 50 MB never arrive,
    so only a server that counts while streaming can answer."""
    url = urlsplit(api_server.url)
    start = body_start("big.txt")
    head = (
        f"POST {route} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {DECLARED}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head + start)
        for _ in range(4):  # 120 KB of a file whose limit is 100 KB, in small steps the server reads at once
            sock.sendall(b"x" * 30_000)
        answer = read_response(sock, timeout=20)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), (answer[:300], api_server.log())
    assert b'"code": 413' in rest and b"big.txt" in rest and str(FILE_LIMIT).encode() in rest
    assert content_files(api_server) == [] and spooled_files() == []


def test_a_streamed_upload_stops_being_read_early(api_server, kb):
    """A client streaming a 128 MB file (chunked, no length) is cut off after little more than the limit."""
    total = 128 * 1024 * 1024
    step = 64 * 1024
    sent = {"bytes": 0}

    def upload():
        yield body_start("huge.txt")
        while sent["bytes"] < total:
            sent["bytes"] += step
            yield b"h" * step
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    try:
        response = httpx.post(api_server.url + UPLOAD_ROUTES[0], content=upload(), headers=headers, timeout=60)
        assert response.status_code == 413 and "huge.txt" in response.json()["msg"], response.text
    except httpx.HTTPError:
        pass  # the server closed the connection while we were still sending: also a refusal
    # What the client sent past the refusal fits in the sockets' buffers, far from the whole file.
    assert sent["bytes"] < total // 4, sent
    assert content_files(api_server) == [] and spooled_files() == []
    assert httpx.get(api_server.url + "/health").status_code == 200


def test_files_under_the_limit_still_upload(api_server, client, kb):
    files = [("files", ("one.txt", b"alpha " * 1000)), ("files", ("two.txt", b"beta " * (FILE_LIMIT // 5)))]
    answer = client.post(UPLOAD_ROUTES[0], data={"knowledge_base_name": KB, "to_vector_store": "false"}, files=files)
    assert answer.status_code == 200 and answer.json()["code"] == 200, answer.text
    assert content_files(api_server) == ["one.txt", "two.txt"]
    answer = client.post(UPLOAD_ROUTES[1], files=files[:1])
    assert answer.status_code == 200 and answer.json()["code"] == 200, answer.text
