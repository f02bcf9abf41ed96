"""A local server speaking SearXNG's JSON search API (``GET /search?q=...&format=json``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from tests.chat.servers.threaded import serve_in_thread


@dataclass
class FakeSearxng:
    results: list[dict]  # {"url", "title", "content"} as SearXNG returns them
    url: str = ""
    queries: list[str] = field(default_factory=list)


def build_app(state: FakeSearxng) -> FastAPI:
    app = FastAPI()

    @app.get("/search")
    def search(q: str = Query(...), format: str = Query("html")):
        if format != "json":  # SearXNG answers 403 when json is not enabled or asked for
            return JSONResponse({"error": "format not allowed"}, status_code=403)
        state.queries.append(q)
        results = [{**item, "engine": "local", "score": 1.0} for item in state.results]
        return {"query": q, "number_of_results": len(results), "results": results, "answers": [], "suggestions": []}

    return app


@contextlib.contextmanager
def fake_searxng(results: list[dict]) -> Iterator[FakeSearxng]:
    state = FakeSearxng(results)
    with serve_in_thread(build_app(state)) as url:
        state.url = url
        yield state
