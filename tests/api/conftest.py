"""One real API server process per test module (module-scoped), plus an HTTP client for it."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.api_server import start_api_server


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, request):
    extra_env = getattr(request.module, "SERVER_ENV", {})
    with start_api_server(tmp_path_factory.mktemp("api"), **extra_env) as server:
        yield server


@pytest.fixture(scope="module")
def client(api_server):
    with httpx.Client(base_url=api_server.url, timeout=180.0) as http:
        yield http
