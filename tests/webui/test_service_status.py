"""The UI calls the API server down only when it stays down: one dropped connection is retried."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

from tests.chat.servers.threaded import serve_handler_in_thread
from tests.helpers.processes import free_port
from tests.webui.support import new_app, texts
from webui_pages.api_client import ApiClient
from webui_pages.common import check_services


@contextlib.contextmanager
def flaky_api(drops: int) -> Iterator[tuple[str, list[str]]]:
    """An API server that closes its first ``drops`` connections without answering (what a
    stale keep-alive connection looks like: RemoteProtocolError), then answers health and models."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.path)
            if len(seen) <= drops:
                self.close_connection = True
                return
            body = json.dumps({"status": "ok"} if self.path == "/health" else {"code": 200, "msg": "", "data": {}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._answer()

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer()

        def log_message(self, *args):
            pass

    with serve_handler_in_thread(Handler) as url:
        yield url, seen


def test_a_dropped_health_check_is_retried_before_the_server_is_called_down():
    with flaky_api(drops=1) as (url, seen), ApiClient(url) as api:
        status = check_services(api)
    assert status.api_ok, status.api_msg
    assert seen[:2] == ["/health", "/health"]


def test_a_server_that_keeps_dropping_is_down_with_a_readable_reason():
    with flaky_api(drops=100) as (url, seen), ApiClient(url) as api:
        status = check_services(api)
    assert not status.api_ok and seen == ["/health"] * 3
    assert "RemoteProtocolError" in status.api_msg and f"{url} " in status.api_msg


def test_the_down_banner_has_an_icon_font_glyph_and_the_address_stands_apart(monkeypatch):
    from configs import reload_settings

    monkeypatch.setenv("CHATCHAT_API_SERVER__PORT", str(free_port()))
    reload_settings()
    try:
        at = new_app()
        at.run()
        banner = at.error[0]
        assert banner.icon == ":material/cloud_off:"
        # The address is followed by a space, so a Markdown autolink cannot swallow the text after it.
        assert "API 服务器不可用" in texts(at.error)[0]
        assert f"{at.session_state['_api_client'].base_url} （" in banner.value
    finally:
        monkeypatch.undo()
        reload_settings()
