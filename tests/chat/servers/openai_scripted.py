"""A small server speaking the OpenAI protocol (models, chat completions, completions), with
scripted replies, that records every request it gets.

Without a script, a chat reply is ``Echo: <last user message>`` so tests can see exactly
what prompt reached the model. A script is a list of replies used in order, each either
``{"content": text}``, ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``, or
``{"content_from_tool": "... {} ..."}``: the text with ``{}`` replaced by the last tool result
the model was given (a ``tool`` message, or an ``Observation:`` line for ReAct text agents).
A ``"delay"`` (seconds) in a reply makes each streamed word wait that long.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.chat.servers.threaded import serve_in_thread


@dataclass
class ScriptedOpenAI:
    models: list[str]
    url: str = ""
    requests: list[dict] = field(default_factory=list)
    script: list[dict] = field(default_factory=list)
    reject_tools: bool = False  # answer 400 to requests carrying "tools", like servers without function calling
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_script(self, replies: list[dict]) -> None:
        with self.lock:
            self.script = list(replies)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.script.clear()
            self.reject_tools = False

    def chat_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if "messages" in r]

    def next_reply(self, body: dict) -> dict:
        with self.lock:
            self.requests.append(body)
            if self.script:
                reply = self.script.pop(0)
                if "content_from_tool" in reply:
                    return {"content": reply["content_from_tool"].format(_last_tool_result(body["messages"]))}
                return reply
        last_user = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
        return {"content": f"Echo: {_text(last_user.get('content', ''))}"}


def _last_tool_result(messages: list[dict]) -> str:
    for message in reversed(messages):
        content = _text(message.get("content") or "")
        if message.get("role") == "tool":
            return content
        if message.get("role") == "user" and content.startswith("Observation:"):
            return content.removeprefix("Observation:").strip()
    return "(no tool result)"


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def build_app(state: ScriptedOpenAI) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "owned_by": "test"} for name in state.models],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if body.get("model") not in state.models:
            return JSONResponse({"error": {"message": "model not found", "type": "invalid_request_error"}}, 404)
        if state.reject_tools and body.get("tools"):
            with state.lock:
                state.requests.append(body)
            return JSONResponse({"error": {"message": "tools are not supported", "type": "invalid_request_error"}}, 400)
        reply = state.next_reply(body)
        if body.get("stream"):
            return StreamingResponse(_chat_chunks(body["model"], reply), media_type="text/event-stream")
        return _chat_response(body["model"], reply)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        with state.lock:
            state.requests.append(body)
        prompt = body["prompt"][0] if isinstance(body["prompt"], list) else body["prompt"]
        text = (prompt if body.get("echo") else "") + f" continued({prompt})"
        if body.get("stream"):
            return StreamingResponse(_completion_chunks(body["model"], text), media_type="text/event-stream")
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        }

    return app


def _tool_calls(reply: dict) -> list[dict]:
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:8]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
        }
        for call in reply.get("tool_calls", [])
    ]


def _chat_response(model: str, reply: dict) -> dict:
    calls = _tool_calls(reply)
    message = {"role": "assistant", "content": reply.get("content")}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _chat_chunks(model: str, reply: dict) -> Iterator[str]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    for piece in re.findall(r"\s*\S+|\s+", reply.get("content") or ""):  # one word per chunk, spaces kept
        time.sleep(reply.get("delay", 0))  # a slow model, to see tokens travel one by one
        yield _sse({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
    calls = _tool_calls(reply)
    for index, call in enumerate(calls):
        delta = {"tool_calls": [{"index": index, **call}]}
        yield _sse({**base, "choices": [{"index": 0, "delta": delta}]})
    finish = "tool_calls" if calls else "stop"
    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    yield "data: [DONE]\n\n"


def _completion_chunks(model: str, text: str) -> Iterator[str]:
    base = {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": model}
    for index in range(0, len(text), 5):
        yield _sse({**base, "choices": [{"index": 0, "text": text[index : index + 5], "finish_reason": None}]})
    yield _sse({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    yield "data: [DONE]\n\n"


@contextlib.contextmanager
def scripted_openai(models: list[str]) -> Iterator[ScriptedOpenAI]:
    state = ScriptedOpenAI(models)
    with serve_in_thread(build_app(state)) as url:
        state.url = url
        yield state
