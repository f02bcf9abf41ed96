"""A forwarding HTTP proxy (plain ``http://`` targets) that records the URLs it was asked for."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx

from tests.chat.servers.threaded import serve_handler_in_thread


class _ProxyHandler(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.seen.append(self.path)  # absolute-form URL, as clients send it to a proxy
        upstream = httpx.get(self.path, headers={"Accept": self.headers.get("Accept", "*/*")}, timeout=10)
        body = upstream.content
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", upstream.headers.get("content-type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def recording_proxy() -> Iterator[tuple[str, list[str]]]:
    """Yield (proxy URL, list of URLs requested through it)."""
    seen: list[str] = []
    with serve_handler_in_thread(type("Handler", (_ProxyHandler,), {"seen": seen})) as url:
        yield url, seen
