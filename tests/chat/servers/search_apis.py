"""A local server speaking the Bing Web Search v7 and Exa (Metaphor) search protocols.

Both check the API key header the real services require and record what they were asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from tests.chat.servers.threaded import serve_in_thread

BING_KEY = "bing-test-key"
EXA_KEY = "exa-test-key"


@dataclass
class FakeSearchApis:
    pages: list[dict]  # {"title", "url", "text"}
    url: str = ""
    bing_queries: list[dict] = field(default_factory=list)
    exa_queries: list[dict] = field(default_factory=list)


def build_app(state: FakeSearchApis) -> FastAPI:
    app = FastAPI()

    @app.get("/v7.0/search")
    def bing(request: Request, ocp_apim_subscription_key: str = Header("")):
        if ocp_apim_subscription_key != BING_KEY:
            return JSONResponse({"error": {"code": "401", "message": "Access denied"}}, status_code=401)
        params = dict(request.query_params)
        state.bing_queries.append(params)
        count = int(params.get("count", 10))
        values = [{"name": p["title"], "url": p["url"], "snippet": p["text"][:200]} for p in state.pages[:count]]
        return {"_type": "SearchResponse", "webPages": {"value": values}}

    @app.post("/search")
    async def exa(request: Request, x_api_key: str = Header("")):
        if x_api_key != EXA_KEY:
            return JSONResponse({"error": "invalid api key"}, status_code=401)
        body = await request.json()
        state.exa_queries.append(body)
        results = [
            {"id": p["url"], "title": p["title"], "url": p["url"], "text": p["text"]}
            for p in state.pages[: body.get("numResults", 10)]
        ]
        return {"requestId": "test", "results": results}

    return app


@contextlib.contextmanager
def fake_search_apis(pages: list[dict]) -> Iterator[FakeSearchApis]:
    state = FakeSearchApis(pages)
    with serve_in_thread(build_app(state)) as url:
        state.url = url
        yield state
