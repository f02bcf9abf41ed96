"""Servers for the web-UI tests: one API server (no LLM) for the whole package, and the UI's settings."""

from __future__ import annotations

import pytest

from tests.helpers.api_server import start_api_server


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    """The real API server on a free port, with its own data root and no LLM behind it."""
    with start_api_server(tmp_path_factory.mktemp("webui_api")) as server:
        yield server


@pytest.fixture
def ui_settings(api_server, monkeypatch):
    """Point the UI (which reads configs.get_settings()) at the test API server."""
    from configs import reload_settings

    monkeypatch.setenv("CHATCHAT_API_SERVER__PORT", str(api_server.port))
    monkeypatch.setenv("CHATCHAT_API_SERVER__HOST", "127.0.0.1")
    reload_settings()
    yield api_server
    monkeypatch.undo()
    reload_settings()
