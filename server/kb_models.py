"""Knowledge bases as OpenAI models, served by the gateway (:20000).

A chat completion whose ``model`` is ``kb:<name>`` (or an alias from ``KB_MODEL_ALIASES``) is
answered by the API server's ``/chat/knowledge_base_chat`` over HTTP and translated into
OpenAI's response format, streamed (``chat.completion.chunk`` events) or not. The gateway
only translates: retrieval, prompt templates and the stored conversation stay in the API
server, which owns the knowledge bases.

Sources come twice: as a numbered list appended to the answer text (``[1] [file](link)``;
``KB_MODEL_CITATIONS=false`` leaves it out) and as ``sources`` beside ``choices``, a list of
``{index, title, link, text, score}``, on the response (or on the last chunk when streaming).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.responses import JSONResponse, StreamingResponse

from configs import get_settings

KB_MODEL_PREFIX = "kb:"
KB_MODEL_OWNER = "chatkb-knowledge-base"
KB_CHAT_PATH = "/chat/knowledge_base_chat"
LIST_KBS_PATH = "/knowledge_base/list_knowledge_bases"
# Request fields passed on to knowledge-base chat as they are (OpenAI clients send them as extra body).
PASSED_FIELDS = ("top_k", "score_threshold", "search_mode", "prompt_name", "conversation_id")
# The API server's error codes, as the HTTP status an OpenAI client expects.
STATUS_FOR_CODE = {400: 400, 401: 401, 403: 400, 404: 404, 413: 413, 422: 400}


class KbChatError(Exception):
    """A request the gateway answers with an OpenAI error body and this status."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def response(self) -> JSONResponse:
        body = {"object": "error", "message": self.message, "type": self.code, "param": None, "code": self.status}
        return JSONResponse({"error": body, **body}, status_code=self.status)


@dataclass(frozen=True)
class ApiServer:
    """Where the gateway reaches the API server, and the key it sends there."""

    url: str
    key: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


def kb_name_for(model: str) -> str | None:
    """The knowledge base a model name stands for, or None for an ordinary model."""
    aliases = get_settings().KB_MODEL_ALIASES
    if model in aliases:
        return aliases[model]
    if model.startswith(KB_MODEL_PREFIX) and len(model) > len(KB_MODEL_PREFIX):
        return model[len(KB_MODEL_PREFIX) :]
    return None


async def kb_model_names(client: httpx.AsyncClient, api: ApiServer) -> list[str]:
    """``kb:<name>`` for every knowledge base of the API server, plus the aliases of existing ones."""
    response = await client.get(api.url + LIST_KBS_PATH, headers=api.headers, timeout=10.0)
    response.raise_for_status()
    names = response.json().get("data") or []
    aliases = [alias for alias, kb in get_settings().KB_MODEL_ALIASES.items() if kb in names]
    return [KB_MODEL_PREFIX + name for name in names] + aliases


# ---- request ---------------------------------------------------------------------------------------


def kb_chat_body(kb_name: str, request: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The API server's knowledge-base chat request for an OpenAI chat request."""
    messages = request.get("messages")
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not messages or not isinstance(messages, list) or messages[-1].get("role") != "user":
        raise KbChatError(400, "the last message must be the user's question")
    body: dict[str, Any] = {
        "query": _text(messages[-1].get("content")),
        "knowledge_base_name": kb_name,
        "history": [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in messages[:-1]],
        "stream": stream,
        "include_sources": True,
    }
    llm = get_settings().KB_MODEL_LLM
    if llm:
        body["model_name"] = llm
    for field in ("temperature", "max_tokens", *PASSED_FIELDS):
        if request.get(field) is not None:
            body[field] = request[field]
    return body


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI's content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


# ---- response --------------------------------------------------------------------------------------


def citations_text(sources: list[dict]) -> str:
    """The numbered list appended to the answer (empty when there are no sources or it is turned off)."""
    if not sources or not get_settings().KB_MODEL_CITATIONS:
        return ""
    lines = []
    for source in sources:
        target = f"({source['link']})" if source.get("link") else ""
        lines.append(f"[{source['index']}] [{source['title']}]{target}")
    return "\n\n---\n" + "\n".join(lines)


class _Completion:
    """Ids and timestamps shared by every chunk of one answer."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())

    def full(self, text: str, sources: list[dict]) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return self._envelope("chat.completion", choice, sources=sources)

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return "data: " + json.dumps(self._envelope("chat.completion.chunk", choice, **extra), ensure_ascii=False)

    def _envelope(self, kind: str, choice: dict, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        } | extra


async def chat(client: httpx.AsyncClient, api: ApiServer, model: str, kb_name: str, request: dict[str, Any]):
    """Answer an OpenAI chat request for a knowledge-base model: a JSON response or an SSE stream."""
    stream = bool(request.get("stream"))
    try:
        body = kb_chat_body(kb_name, request, stream)
        upstream = await _open(client, api, body)
    except KbChatError as exc:
        return exc.response()
    completion = _Completion(model)
    if stream:
        return StreamingResponse(_stream(upstream, completion), media_type="text/event-stream")
    try:
        events = [event async for event in _events(upstream)]
    finally:
        await upstream.aclose()
    final = events[-1] if events else {}
    if "answer" not in final:
        return KbChatError(502, _error_message(final), "server_error").response()
    sources = final.get("sources") or []
    return JSONResponse(completion.full(final["answer"] + citations_text(sources), sources))


async def _open(client: httpx.AsyncClient, api: ApiServer, body: dict[str, Any]) -> httpx.Response:
    """Start the API server's answer; its early errors (a JSON envelope, not a stream) become KbChatError."""
    request = client.build_request("POST", api.url + KB_CHAT_PATH, json=body, headers=api.headers)
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise KbChatError(502, f"the API server ({api.url}) did not answer: {exc}", "server_error")
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return response
    await response.aread()
    await response.aclose()
    try:
        envelope = response.json()
    except ValueError:
        envelope = {"code": response.status_code, "msg": response.text[:500]}
    code = envelope.get("code") if isinstance(envelope, dict) else None
    status = STATUS_FOR_CODE.get(code if isinstance(code, int) else response.status_code, 502)
    raise KbChatError(status, _error_message(envelope), "invalid_request_error" if status < 500 else "server_error")


def _error_message(envelope: Any) -> str:
    if isinstance(envelope, dict):
        detail = envelope.get("msg") or envelope.get("detail")
        if detail:
            return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    return "the knowledge-base chat gave no answer"


async def _events(response: httpx.Response) -> AsyncIterator[dict]:
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield json.loads(line[len("data:") :].strip())


async def _stream(upstream: httpx.Response, completion: _Completion) -> AsyncIterator[str]:
    """The API server's events as OpenAI chunks: the role, each token, the citations, the end."""
    try:
        yield completion.chunk({"role": "assistant", "content": ""}) + "\n\n"
        async for event in _events(upstream):
            if "answer" in event and event["answer"]:
                yield completion.chunk({"content": event["answer"]}) + "\n\n"
            if "docs" in event:
                sources = event.get("sources") or []
                citations = citations_text(sources)
                if citations:
                    yield completion.chunk({"content": citations}) + "\n\n"
                yield completion.chunk({}, "stop", sources=sources) + "\n\n"
            elif "code" in event and "answer" not in event:  # the model failed mid-answer
                error = {"message": _error_message(event), "type": "server_error", "code": event["code"]}
                yield "data: " + json.dumps({"error": error}, ensure_ascii=False) + "\n\n"
                return
        yield "data: [DONE]\n\n"
    finally:
        await upstream.aclose()
