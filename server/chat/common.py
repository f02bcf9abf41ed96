"""Pieces every chat mode shares: request fields, errors, prompts, history and the event stream."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any, Literal

from fastapi.responses import JSONResponse
from jinja2 import TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field, model_validator
from sse_starlette.sse import EventSourceResponse

from configs import get_settings
from server.chat import llm
from server.responses import BaseResponse

logger = logging.getLogger(__name__)

PromptType = Literal["llm_chat", "knowledge_base_chat", "search_engine_chat", "agent_chat", "completion"]

# Chatchat's clients send these role names too.
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "bot": "assistant"}


class ChatError(Exception):
    """A problem found before the answer starts: answered as an envelope, never as a stream."""

    def __init__(self, code: int, msg: str, data: Any = None):
        super().__init__(msg)
        self.code, self.msg, self.data = code, msg, data

    def response(self) -> JSONResponse:
        return JSONResponse(BaseResponse(code=self.code, msg=self.msg, data=self.data).model_dump())


class History(BaseModel):
    """One past message; also accepts Chatchat's ``[role, content]`` pairs."""

    role: str
    content: str

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"role": value[0], "content": value[1]}
        return value

    def to_message(self) -> BaseMessage:
        role = _ROLE_ALIASES.get(self.role.lower(), self.role.lower())
        if role == "assistant":
            return AIMessage(content=self.content)
        if role == "system":
            return SystemMessage(content=self.content)
        return HumanMessage(content=self.content)


class LLMRequest(BaseModel):
    """Fields every LLM-backed mode takes, with Chatchat's defaults."""

    stream: bool = Field(False, description="stream tokens as they come (else one event with the whole answer)")
    model_name: str = Field(default_factory=llm.default_model_name, description="any model the gateway serves")
    temperature: float = Field(default_factory=lambda: get_settings().TEMPERATURE, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, description="tokens to generate; null or <= 0: MAX_TOKENS from settings")
    prompt_name: str = Field("default", description="template name under PROMPT_TEMPLATES[<mode>]")
    conversation_id: str = Field("", max_length=32, description="conversation the exchange is stored under")


# ---- validation shared by the modes ---------------------------------------------------------------


def require_query(query: str) -> None:
    if not query or not query.strip():
        raise ChatError(400, "问题不能为空，请输入问题 (query must not be empty)")


async def require_model(model_name: str) -> None:
    try:
        await llm.ensure_model(model_name)
    except llm.ModelNotFound as exc:
        raise ChatError(404, f"未找到模型 {model_name}", data={"available_models": exc.available})
    except llm.GatewayUnavailable as exc:
        raise ChatError(500, f"无法连接大模型服务（FastChat OpenAI API）：{exc}")


# ---- prompt templates -------------------------------------------------------------------------------

_jinja = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def prompt_template(prompt_type: PromptType, prompt_name: str) -> str:
    templates = get_settings().PROMPT_TEMPLATES.get(prompt_type, {})
    if prompt_name not in templates:
        raise ChatError(404, f"未找到提示词模板 {prompt_type}/{prompt_name}", data={"available": sorted(templates)})
    return templates[prompt_name]


@lru_cache(maxsize=128)
def _compiled(template: str):
    return _jinja.from_string(template)


@lru_cache(maxsize=128)
def template_variables(template: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_jinja.parse(template)))


def render_prompt(template: str, **values: Any) -> str:
    """Fill a Jinja2 template; client text only ever arrives as values, never as template source."""
    try:
        return _compiled(template).render(**values)
    except TemplateError as exc:
        raise ChatError(500, f"提示词模板有误：{exc}")


def build_messages(history: list[History], prompt: str, system: str | None = None) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(content=system)] if system else []
    messages += [item.to_message() for item in history]
    messages.append(HumanMessage(content=prompt))
    return messages


def history_as_text(history: list[History]) -> str:
    """History for templates that place it themselves (``{{ history }}``)."""
    lines = []
    for item in history:
        speaker = "AI" if _ROLE_ALIASES.get(item.role.lower(), item.role.lower()) == "assistant" else "Human"
        lines.append(f"{speaker}: {item.content}")
    return "\n".join(lines)


# ---- the event stream ---------------------------------------------------------------------------------


def dumps(payload: Any) -> str:
    """One-line JSON with raw UTF-8, as Chatchat's clients parse it."""
    return json.dumps(payload, ensure_ascii=False)


def error_event(msg: str, code: int = 500) -> str:
    """An error that happens after the stream started: an envelope-shaped event clients show as an error."""
    return dumps({"code": code, "msg": msg})


def event_stream(events: AsyncIterator[str]) -> EventSourceResponse:
    # No keep-alive comments: Chatchat's clients json.loads every chunk, and a `: ping` sent while a
    # slow model thinks would break them (ping=0 turns pings off in sse-starlette 3.x).
    return EventSourceResponse(events, ping=0)


async def stream_tokens(model, messages: list[BaseMessage]) -> AsyncIterator[str]:
    async for chunk in model.astream(messages):
        if chunk.content:
            yield chunk.content if isinstance(chunk.content, str) else str(chunk.content)


def llm_failure_message(model_name: str, exc: BaseException) -> str:
    logger.warning("LLM call to %s failed: %s", model_name, exc)
    return f"调用大模型 {model_name} 出错：{type(exc).__name__}: {exc}"


async def guarded(events: AsyncIterator[str], on_error: Callable[[BaseException], str]) -> AsyncIterator[str]:
    """Pass events through; an exception becomes one last error event instead of a broken stream."""
    try:
        async for event in events:
            yield event
    except Exception as exc:  # the stream has started: report in-band, never as a traceback
        yield error_event(on_error(exc))


# ---- stored exchanges ------------------------------------------------------------------------------


def start_exchange(conversation_id: str, chat_type: str, query: str, meta_data: dict) -> str:
    """Store the question before answering, so feedback can name it by the message_id we stream."""
    from server.db.repositories import conversation as conversation_repo

    conversation_repo.ensure_conversation(conversation_id, chat_type, name=query)
    return conversation_repo.add_message(conversation_id, chat_type, query, meta_data=meta_data)


def finish_exchange(message_id: str, answer: str) -> None:
    from server.db.repositories import conversation as conversation_repo

    conversation_repo.update_response(message_id, answer)
