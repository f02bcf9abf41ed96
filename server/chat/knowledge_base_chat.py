"""``/chat/knowledge_base_chat``: retrieve from a knowledge base, answer from it, cite the chunks.

Nothing passing the threshold switches to the ``empty`` template and says so in the sources,
rather than letting the model pretend it read something. ``return_direct`` skips the model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import Request
from pydantic import Field

from configs import get_settings
from server.chat import common, retrieval
from server.chat.common import ChatError, History, LLMRequest
from server.knowledge_base import paths, service
from server.knowledge_base.search import SearchMode
from server.knowledge_base.vector_stores import ScoredChunk

PROMPT_TYPE = "knowledge_base_chat"
EMPTY_PROMPT_NAME = "empty"


class KnowledgeBaseChatRequest(LLMRequest):
    query: str = Field(..., description="the question")
    knowledge_base_name: str = Field(..., description="knowledge base to search")
    top_k: int = Field(default_factory=lambda: get_settings().VECTOR_SEARCH_TOP_K, ge=1, le=100)
    score_threshold: float = Field(
        default_factory=lambda: get_settings().SCORE_THRESHOLD,
        ge=0.0,
        le=2.0,
        description="keep chunks with score <= this; score = (1 - cosine) / 2, so 1 or more keeps everything",
    )
    history: list[History] = Field([], description="past messages [{role, content}]")
    return_direct: bool = Field(False, description="return the sources only, without asking the model")
    search_mode: SearchMode | None = Field(None, description="vector, keyword or hybrid; default SEARCH_MODE")
    include_sources: bool = Field(
        False, description="also put the sources as objects (index, title, link, text, score) in the last event"
    )


async def knowledge_base_chat(body: KnowledgeBaseChatRequest, request: Request):
    try:
        common.require_query(body.query)
        _require_kb(body.knowledge_base_name)
        template = common.prompt_template(PROMPT_TYPE, body.prompt_name)
        if not body.return_direct:
            await common.require_model(body.model_name)
        hits = await asyncio.to_thread(_search, body)
        prompt = build_prompt(template, body.query, hits)
    except ChatError as exc:
        return exc.response()
    sources = kb_sources(str(request.base_url), body.knowledge_base_name, hits)
    docs = retrieval.format_sources(sources)
    exchange = retrieval.Exchange(PROMPT_TYPE, body.query)
    events = retrieval.answer_events(body, exchange, body.history, prompt, docs, body.return_direct, template=template)
    if body.include_sources:
        events = _with_sources(events, structured_sources(sources, hits))
    return common.event_stream(events)


def structured_sources(sources: list[retrieval.Source], hits: list[ScoredChunk]) -> list[dict]:
    """The sources as objects, numbered as in ``docs``: for clients (the OpenAI gateway) that re-format them."""
    return [
        {"index": number, "title": source.title, "link": source.link, "text": source.text, "score": float(hit.score)}
        for number, (source, hit) in enumerate(zip(sources, hits, strict=True), start=1)
    ]


async def _with_sources(events: AsyncIterator[str], sources: list[dict]) -> AsyncIterator[str]:
    """Add ``sources`` to the event that carries ``docs`` (the last one)."""
    async for event in events:
        payload = json.loads(event)
        if isinstance(payload, dict) and "docs" in payload:
            event = common.dumps({**payload, "sources": sources})
        yield event


def _require_kb(kb_name: str) -> None:
    try:
        paths.validate_kb_name(kb_name)
    except paths.UnsafeName:
        raise ChatError(403, "Don't attack me")
    if not service.kb_exists(kb_name):
        raise ChatError(404, f"未找到知识库 {kb_name}")


def _search(body: KnowledgeBaseChatRequest) -> list[ScoredChunk]:
    try:
        return service.search(body.knowledge_base_name, body.query, body.top_k, body.score_threshold, body.search_mode)
    except service.KnowledgeBaseNotFound:
        raise ChatError(404, f"未找到知识库 {body.knowledge_base_name}")
    except Exception as exc:  # a broken index or embedding model: say so, never a 500
        raise ChatError(500, f"检索知识库 {body.knowledge_base_name} 出错：{exc}")


def build_prompt(template: str, query: str, hits: list[ScoredChunk]) -> str:
    """The chosen template over the hits, or the ``empty`` one when there are none."""
    if not hits:
        return retrieval.build_prompt(common.prompt_template(PROMPT_TYPE, EMPTY_PROMPT_NAME), query, "")
    context = "\n".join(hit.chunk.page_content for hit in hits)
    return retrieval.build_prompt(template, query, context)


def kb_sources(base_url: str, kb_name: str, hits: list[ScoredChunk]) -> list[retrieval.Source]:
    sources = []
    for hit in hits:
        file_name = str(hit.chunk.metadata.get("source", ""))
        link = retrieval.download_link(base_url, kb_name, file_name)
        sources.append(retrieval.Source(file_name, hit.chunk.page_content, link))
    return sources
