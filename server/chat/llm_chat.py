"""``/chat/chat``: talk to the model; every exchange is stored, and history can come back from the DB.

When ``conversation_id`` and ``history_len > 0`` are given (and no explicit ``history``), the
last ``history_len`` answered messages of that conversation are read from the database, so a
conversation continues after the API server restarts. ``/chat/feedback`` scores a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Body
from pydantic import Field
from sqlalchemy.exc import SQLAlchemyError

from server.chat import common, llm
from server.chat.common import ChatError, History, LLMRequest
from server.db.repositories import conversation as conversation_repo
from server.responses import BaseResponse

CHAT_TYPE = "llm_chat"
# Past messages read from the DB are cut, oldest first, to keep the prompt within small models' context.
MAX_DB_HISTORY_CHARS = 6000


class ChatRequest(LLMRequest):
    query: str = Field(..., description="the user's message")
    history_len: int = Field(-1, description="> 0: read that many past messages of the conversation from the DB")
    history: list[History] = Field([], description="past messages [{role, content}]; takes precedence over the DB")


async def chat(body: ChatRequest):
    try:
        common.require_query(body.query)
        template = common.prompt_template(CHAT_TYPE, body.prompt_name)
        await common.require_model(body.model_name)
        history = body.history or await asyncio.to_thread(_history_from_db, body.conversation_id, body.history_len)
        messages = _messages(template, history, body.query)
        message_id = await asyncio.to_thread(_start_exchange, body)
    except ChatError as exc:
        return exc.response()
    except SQLAlchemyError as exc:  # history could not be read or the exchange not stored
        return ChatError(500, f"读写聊天记录出错：{exc}").response()
    return common.event_stream(_answer_events(body, messages, message_id))


def _history_from_db(conversation_id: str, history_len: int) -> list[History]:
    records = conversation_repo.recent_messages(conversation_id, history_len)
    history: list[History] = []
    total = 0
    for record in reversed(records):  # newest first, so the oldest are the ones dropped
        total += len(record.query) + len(record.response)
        if history and total > MAX_DB_HISTORY_CHARS:
            break
        history[:0] = [History(role="user", content=record.query), History(role="assistant", content=record.response)]
    return history


def _messages(template: str, history: list[History], query: str):
    if "history" in common.template_variables(template):
        # The template places the history itself (e.g. "with_history").
        prompt = common.render_prompt(template, input=query, history=common.history_as_text(history))
        return common.build_messages([], prompt)
    return common.build_messages(history, common.render_prompt(template, input=query))


def _start_exchange(body: ChatRequest) -> str:
    meta = {"model_name": body.model_name, "prompt_name": body.prompt_name}
    return common.start_exchange(body.conversation_id, CHAT_TYPE, body.query, meta)


async def _answer_events(body: ChatRequest, messages, message_id: str) -> AsyncIterator[str]:
    model = llm.chat_model(body.model_name, body.temperature, body.max_tokens)
    answer = ""
    try:
        async for token in common.stream_tokens(model, messages):
            answer += token
            if body.stream:
                yield common.dumps({"text": token, "message_id": message_id})
        if not body.stream:
            yield common.dumps({"text": answer, "message_id": message_id})
    except Exception as exc:  # after the headers went out: report in the stream
        yield common.error_event(common.llm_failure_message(body.model_name, exc))
    finally:
        # Also runs when the client disconnects (the generator is cancelled, so no await here):
        # whatever was generated is kept.
        common.finish_exchange(message_id, answer)


# ---- feedback ------------------------------------------------------------------------------------------


async def feedback(
    message_id: str = Body("", max_length=32, description="id from a /chat/chat event"),
    score: int = Body(0, ge=0, le=100, description="0..100"),
    reason: str = Body("", description="why"),
):
    try:
        found = await asyncio.to_thread(conversation_repo.set_feedback, message_id, score, reason)
    except Exception as exc:
        return BaseResponse(code=500, msg=f"反馈聊天记录出错： {exc}")
    if not found:
        return BaseResponse(code=404, msg=f"未找到聊天记录 {message_id}")
    return BaseResponse(code=200, msg=f"已反馈聊天记录 {message_id}")
