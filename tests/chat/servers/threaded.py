"""Run a test server in a background thread of the test process, on a free port: an ASGI app with uvicorn,
or a plain http.server handler."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import uvicorn

from tests.helpers.processes import free_port


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:<port>``) while the app serves."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("local test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_handler_in_thread(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Yield the base URL while a ThreadingHTTPServer answers with ``handler``; shut down after."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
