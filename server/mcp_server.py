"""MCP server (:7862): ``python -m server.mcp_server --host 127.0.0.1 --port 7862``.

Knowledge-base tools for MCP clients (Claude Desktop, Cursor, agents built on the MCP SDK),
over streamable HTTP at ``/mcp``, with the official ``mcp`` SDK (2.x, ``MCPServer``):

- ``list_knowledge_bases``: name, description, file count and embedding model of each one;
- ``search_docs``: the best chunks for a query, with their file and score;
- ``knowledge_base_chat``: an answer from a knowledge base by the configured LLM, with its sources.

The tools call the API server over HTTP (API_SERVER, or ``--api-address``), as every process of the
stack meets the others; with API_KEYS set, MCP clients send ``Authorization: Bearer <key>`` as for
the API, and the server passes the first key on. ``GET /health`` needs no key.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import httpx
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from configs import VERSION, get_settings
from server.kb_models import ApiServer
from server.security import bearer_key_matches

logger = logging.getLogger("chatkb.mcp")

MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "Tools over the local knowledge bases of chatkb: list_knowledge_bases first, then search_docs for "
    "passages or knowledge_base_chat for an answer with numbered sources."
)


class KnowledgeBase(BaseModel):
    name: str
    description: str
    files: int
    embedding_model: str


class Passage(BaseModel):
    source: str  # the file it comes from
    text: str
    score: float | None  # lower is closer


class Source(BaseModel):
    index: int  # the number the answer's citations use
    title: str
    link: str | None
    text: str


class Answer(BaseModel):
    answer: str
    sources: list[Source]


class KnowledgeBaseTools:
    """The tools' work: one HTTP call to the API server each, its errors as ToolError."""

    def __init__(self, api: ApiServer, timeout: float):
        self.api = api
        self.timeout = timeout

    async def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.request(method, self.api.url + path, json=body, headers=self.api.headers)
        except httpx.HTTPError as exc:
            raise ToolError(f"the API server ({self.api.url}) did not answer: {exc}") from exc
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        data = response.json() if response.content else None
        if response.status_code != 200 or (isinstance(data, dict) and data.get("code", 200) != 200):
            message = data.get("msg") or data.get("detail") if isinstance(data, dict) else response.text
            raise ToolError(f"{path} failed: {message}")
        return data

    async def list_knowledge_bases(self) -> list[KnowledgeBase]:
        data = await self._call("GET", "/knowledge_base/list_knowledge_base_details")
        return [
            KnowledgeBase(
                name=kb["kb_name"],
                description=kb.get("kb_info") or "",
                files=kb.get("file_count") or 0,
                embedding_model=kb.get("embed_model") or "",
            )
            for kb in data["data"]
        ]

    async def search_docs(
        self, query: str, knowledge_base_name: str, top_k: int, search_mode: str | None
    ) -> list[Passage]:
        await self._require_kb(knowledge_base_name)
        body = {"query": query, "knowledge_base_name": knowledge_base_name, "top_k": top_k, "search_mode": search_mode}
        hits = await self._call("POST", "/knowledge_base/search_docs", body)
        return [
            Passage(source=str(hit["metadata"].get("source", "")), text=hit["page_content"], score=hit.get("score"))
            for hit in hits
        ]

    async def knowledge_base_chat(self, query: str, knowledge_base_name: str, top_k: int | None) -> Answer:
        body: dict[str, Any] = {
            "query": query,
            "knowledge_base_name": knowledge_base_name,
            "stream": False,
            "include_sources": True,
        }
        if top_k:
            body["top_k"] = top_k
        model = get_settings().KB_MODEL_LLM
        if model:
            body["model_name"] = model
        events = await self._call("POST", "/chat/knowledge_base_chat", body)
        if isinstance(events, dict):  # an early error envelope would have raised; anything else is odd
            raise ToolError(f"unexpected answer from the API server: {events}")
        final = events[-1] if events else {}
        if "answer" not in final:
            raise ToolError(final.get("msg") or "the knowledge-base chat gave no answer")
        return Answer(answer=final["answer"], sources=[Source(**source) for source in final.get("sources") or []])

    async def _require_kb(self, name: str) -> None:
        # The API's search_docs answers [] for an unknown knowledge base; a tool should say why.
        names = (await self._call("GET", "/knowledge_base/list_knowledge_bases"))["data"]
        if name not in names:
            raise ToolError(f"no knowledge base named {name!r}; there are: {', '.join(names) or 'none'}")


def build_server(api: ApiServer, timeout: float = 300.0) -> MCPServer:
    tools = KnowledgeBaseTools(api, timeout)
    server = MCPServer("chatkb", instructions=INSTRUCTIONS, version=VERSION)

    @server.tool()
    async def list_knowledge_bases() -> list[KnowledgeBase]:
        """List the knowledge bases: name, description, number of files and embedding model."""
        return await tools.list_knowledge_bases()

    @server.tool()
    async def search_docs(
        query: str, knowledge_base_name: str, top_k: int = 3, search_mode: str | None = None
    ) -> list[Passage]:
        """Find the passages of a knowledge base that best match the query (source file, text, score;
        lower scores are closer). search_mode: vector, keyword or hybrid (default: the server's)."""
        return await tools.search_docs(query, knowledge_base_name, top_k, search_mode)

    @server.tool()
    async def knowledge_base_chat(query: str, knowledge_base_name: str, top_k: int | None = None) -> Answer:
        """Answer a question from a knowledge base with the configured LLM; the answer's sources are
        numbered (index, title, link, text)."""
        return await tools.knowledge_base_chat(query, knowledge_base_name, top_k)

    return server


class RequireApiKey:
    """ASGI middleware: with API keys configured, every request but /health needs a Bearer key."""

    def __init__(self, app: ASGIApp, keys: list[str]):
        self.app = app
        self.keys = list(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] == "/health" or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if bearer_key_matches(headers.get(b"authorization", b"").decode("latin-1"), self.keys):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "a valid API key is needed: send Authorization: Bearer <key>"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build_app(api: ApiServer, keys: list[str], host: str) -> ASGIApp:
    server = build_server(api, get_settings().HTTPX_DEFAULT_TIMEOUT)

    @server.custom_route("/health", methods=["GET"])
    async def health(_request):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "api_server": api.url})

    # Stateless: any worker of a restarted server answers; the tools keep no per-session state.
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=True, host=host)
    return RequireApiKey(app, keys)


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="chatkb MCP server (knowledge-base tools over streamable HTTP)")
    parser.add_argument("--host", default=settings.MCP_SERVER.host)
    parser.add_argument("--port", type=int, default=settings.MCP_SERVER.port)
    parser.add_argument("--api-address", default=settings.API_SERVER.url, help="the API server the tools call")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    keys = list(settings.API_KEYS)
    api = ApiServer(args.api_address.rstrip("/"), keys[0] if keys else None)
    app = build_app(api, keys, args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
