"""``/chat/file_chat``: like knowledge-base chat, over the temporary index of an ``upload_temp_docs`` id."""

from __future__ import annotations

import asyncio

from pydantic import Field

from configs import get_settings
from server.chat import common, retrieval
from server.chat.common import ChatError, History, LLMRequest
from server.chat.knowledge_base_chat import PROMPT_TYPE, build_prompt
from server.knowledge_base.search import SearchMode
from server.knowledge_base.temp_stores import TempStoreNotFound, get_temp_stores
from server.knowledge_base.vector_stores import ScoredChunk

CHAT_TYPE = "file_chat"


class FileChatRequest(LLMRequest):
    query: str = Field(..., description="the question")
    knowledge_id: str = Field(..., description="id returned by /knowledge_base/upload_temp_docs")
    top_k: int = Field(default_factory=lambda: get_settings().VECTOR_SEARCH_TOP_K, ge=1, le=100)
    score_threshold: float = Field(default_factory=lambda: get_settings().SCORE_THRESHOLD, ge=0.0, le=2.0)
    history: list[History] = Field([], description="past messages [{role, content}]")
    search_mode: SearchMode | None = Field(None, description="vector, keyword or hybrid; default SEARCH_MODE")


async def file_chat(body: FileChatRequest):
    try:
        common.require_query(body.query)
        template = common.prompt_template(PROMPT_TYPE, body.prompt_name)
        await common.require_model(body.model_name)
        hits = await asyncio.to_thread(_search, body)
        prompt = build_prompt(template, body.query, hits)
    except ChatError as exc:
        return exc.response()
    # Temp files have no download link: they are gone once indexed.
    sources = [retrieval.Source(str(h.chunk.metadata.get("source", "")), h.chunk.page_content) for h in hits]
    docs = retrieval.format_sources(sources)
    return common.event_stream(
        retrieval.answer_events(
            body, retrieval.Exchange(CHAT_TYPE, body.query), body.history, prompt, docs, template=template
        )
    )


def _search(body: FileChatRequest) -> list[ScoredChunk]:
    try:
        return get_temp_stores().search(
            body.knowledge_id, body.query, body.top_k, body.score_threshold, body.search_mode
        )
    except TempStoreNotFound:
        raise ChatError(404, f"未找到临时知识库 {body.knowledge_id}，请先上传文件")
    except Exception as exc:
        raise ChatError(500, f"检索临时知识库 {body.knowledge_id} 出错：{exc}")
