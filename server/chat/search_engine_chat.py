"""``/chat/search_engine_chat``: search the web with the engine the request names, answer, cite.

An unknown engine or a missing key/URL is refused before streaming (envelope 404). A search
that fails once the answer has started (no network, engine blocked) becomes an error event
that tells the user what happened and how to set a proxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from configs import get_settings
from server.chat import common, retrieval, search_engines
from server.chat.common import ChatError, History, LLMRequest
from server.chat.search_engines import SearchEngineError, SearchEngineNotConfigured, SearchResult

PROMPT_TYPE = "search_engine_chat"


class SearchEngineChatRequest(LLMRequest):
    query: str = Field(..., description="the question")
    search_engine_name: str = Field(..., description="bing | duckduckgo | metaphor | searxng")
    top_k: int = Field(default_factory=lambda: get_settings().SEARCH_ENGINE_TOP_K, ge=1, le=50)
    history: list[History] = Field([], description="past messages [{role, content}]")
    split_result: bool = Field(False, description="cut pages into passages and keep the closest ones")


async def search_engine_chat(body: SearchEngineChatRequest):
    try:
        common.require_query(body.query)
        _require_engine(body.search_engine_name)
        template = common.prompt_template(PROMPT_TYPE, body.prompt_name)
        await common.require_model(body.model_name)
    except ChatError as exc:
        return exc.response()
    return common.event_stream(_events(body, template))


def _require_engine(name: str) -> None:
    engine = search_engines.resolve_engine(name)
    if engine is None:
        raise ChatError(404, f"未支持搜索引擎 {name}", data={"engines": search_engines.engine_names()})
    try:
        engine.check_configured()
    except SearchEngineNotConfigured as exc:
        raise ChatError(404, str(exc))


def search_failure_message(engine: str, exc: Exception) -> str:
    return f"搜索引擎 {engine} 请求失败：{exc}。请检查网络连接；如需代理，请在设置中配置 SEARCH_PROXY。"


async def _events(body: SearchEngineChatRequest, template: str) -> AsyncIterator[str]:
    try:
        results = await search_engines.search(body.search_engine_name, body.query, body.top_k, body.split_result)
    except SearchEngineError as exc:
        yield common.error_event(search_failure_message(body.search_engine_name, exc))
        return
    context = "\n".join(result.snippet for result in results)
    prompt = retrieval.build_prompt(template, body.query, context)
    docs = retrieval.format_sources(web_sources(results))
    async for event in retrieval.answer_events(
        body, retrieval.Exchange(PROMPT_TYPE, body.query), body.history, prompt, docs, template=template
    ):
        yield event


def web_sources(results: list[SearchResult]) -> list[retrieval.Source]:
    return [retrieval.Source(r.title or r.link, r.snippet, r.link or None) for r in results]
