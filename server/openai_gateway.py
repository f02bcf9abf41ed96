"""OpenAI-compatible gateway (:20000): ``python -m server.openai_gateway --host 127.0.0.1 --port 20000``.

Wraps ``fastchat.serve.openai_api_server`` (``/v1/models``, ``/v1/chat/completions``,
``/v1/completions``, ``/v1/embeddings``) with these changes:

- **The model's own chat template.** FastChat builds chat prompts from its conversation
  templates, picked by model name; for a name it does not know it falls back to a one-shot
  template that adds ~470 tokens of example dialogue. Our workers advertise the template
  name ``chatkb-chat-template``; for them the gateway sends the messages to the worker's
  ``/worker_apply_chat_template`` and generates from the prompt it returns (and passes the
  messages along, which the proxy worker forwards upstream as they are). Workers of any
  other kind (a stock FastChat worker joining the controller) keep FastChat's behaviour.
- Requests from current clients are normalised: ``max_completion_tokens`` is read as
  ``max_tokens``, the ``developer`` role as ``system``, list-of-parts contents as text.
- Optional API keys: API_KEYS from settings (or ``--api-keys``); clients send
  ``Authorization: Bearer <key>``. ``GET /health`` needs no key.
- Worker calls wait up to HTTPX_DEFAULT_TIMEOUT; embeddings go to workers in batches of 64
  (FastChat's default of 4 made one request per 4 texts).
- **Knowledge bases as models** (kb_models.py): ``kb:<name>`` (and KB_MODEL_ALIASES) are listed
  by ``/v1/models`` and answered by the API server's knowledge-base chat, with sources.
- ``input`` (embeddings) and ``prompt`` (completions) must be a string or a list of strings:
  token-id arrays, empty lists and other values get a 400 saying so. FastChat decoded token ids
  with tiktoken, which downloads its vocabulary (a bare 500 offline), and the ids are OpenAI's
  tokens, meaningless to local models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from configs import get_settings

_settings = get_settings()
os.environ.setdefault("LOGDIR", "")  # FastChat writes log files into the working directory otherwise
os.environ.setdefault("FASTCHAT_WORKER_API_TIMEOUT", str(int(_settings.HTTPX_DEFAULT_TIMEOUT)))
os.environ.setdefault("FASTCHAT_WORKER_API_EMBEDDING_BATCH_SIZE", "64")

import fastchat.serve.openai_api_server as fastchat_gateway  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import Depends  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastchat.constants import ErrorCode  # noqa: E402
from fastchat.protocol.openai_api_protocol import ChatCompletionRequest, ModelCard, ModelPermission  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from server import kb_models  # noqa: E402
from server.model_workers.base import CHAT_TEMPLATE_MARKER, normalize_messages  # noqa: E402

# Importing FastChat's server swaps sys.stdout/stderr for loggers; keep the real streams.
sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
logger = logging.getLogger("chatkb.gateway")
app = fastchat_gateway.app
_fastchat_get_gen_params = fastchat_gateway.get_gen_params
_client: httpx.AsyncClient | None = None
_api_server = kb_models.ApiServer(_settings.API_SERVER.url, _settings.API_KEYS[0] if _settings.API_KEYS else None)


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=httpx.Timeout(_settings.HTTPX_DEFAULT_TIMEOUT, connect=10.0))
    return _client


async def get_gen_params(model_name: str, worker_addr: str, messages, **kwargs) -> dict[str, Any]:
    """FastChat's get_gen_params, but chat prompts of our workers come from the model's chat template."""
    if isinstance(messages, str):
        return await _fastchat_get_gen_params(model_name, worker_addr, messages, **kwargs)
    conv = await fastchat_gateway.get_conv(model_name, worker_addr)
    if conv.get("name") != CHAT_TEMPLATE_MARKER:
        return await _fastchat_get_gen_params(model_name, worker_addr, messages, **kwargs)
    normalized = normalize_messages(messages)
    response = await _http().post(
        worker_addr + "/worker_apply_chat_template", json={"model": model_name, "messages": normalized}
    )
    rendered = response.json()
    if response.status_code != 200 or "prompt" not in rendered:
        raise ValueError(f"the worker could not apply the chat template: {rendered.get('text', rendered)}")
    params = await _fastchat_get_gen_params(model_name, worker_addr, rendered["prompt"], **kwargs)
    params["messages"] = normalized
    params["requested_max_tokens"] = kwargs.get("max_tokens")
    return params


fastchat_gateway.get_gen_params = get_gen_params


class InvalidInput(ValueError):
    """An embeddings input or completions prompt that is not text; answered with 400."""


TOKEN_IDS = (
    "token-id arrays are not accepted: their ids come from OpenAI's tokenizer and mean nothing to the "
    "local models here. Send strings"
)
LANGCHAIN_HINT = "; with LangChain use OpenAIEmbeddings(..., check_embedding_ctx_length=False)"


def process_input(model_name: str, inp: Any) -> list[str]:
    """FastChat's process_input, which turns ``input``/``prompt`` into a list of texts, minus token ids."""
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list) and inp and all(isinstance(item, str) for item in inp):
        return inp
    if _is_token_ids(inp):
        raise InvalidInput(TOKEN_IDS)
    raise InvalidInput("expected a string or a non-empty list of strings")


def _is_token_ids(inp: Any) -> bool:
    """A list of ints, or a list of lists of ints: what tiktoken-based clients send."""
    if not isinstance(inp, list) or not inp:
        return False
    rows = inp if all(isinstance(item, list) for item in inp) else [inp]
    return all(row and all(isinstance(t, int) for t in row) for row in rows)


fastchat_gateway.process_input = process_input


@app.exception_handler(InvalidInput)
async def invalid_input(request, exc: InvalidInput) -> JSONResponse:
    # FastChat's error body (object/message/code, as for its other 400s) plus OpenAI's type and param.
    embeddings = request.url.path.endswith("/embeddings")
    field = "input" if embeddings else "prompt"
    hint = LANGCHAIN_HINT if embeddings and str(exc) == TOKEN_IDS else ""
    body = {
        "object": "error",
        "message": f"invalid '{field}': {exc}{hint}.",
        "code": ErrorCode.VALIDATION_TYPE_ERROR,
        "type": "invalid_request_error",
        "param": field,
    }
    return JSONResponse(body, status_code=400)


def _stream_json(self, *, exclude_unset: bool = False, exclude_none: bool = False, ensure_ascii: bool = False) -> str:
    """pydantic-1 style ``.json(...)``, which FastChat's stream generators call and pydantic 2 refuses.

    Unset defaults (``object``, ``created``) are kept, as OpenAI sends them; None fields are dropped.
    """
    return json.dumps(self.model_dump(exclude_none=True), ensure_ascii=ensure_ascii)


for _model in (fastchat_gateway.ChatCompletionStreamResponse, fastchat_gateway.CompletionStreamResponse):
    _model.json = _stream_json


class NormalizeRequests:
    """ASGI middleware: rewrite chat-completion bodies of newer clients into what FastChat's models accept."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                body = json.dumps(_normalize_chat_body(data)).encode()
        except ValueError:
            pass  # FastAPI reports the invalid JSON
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay, send)


def _normalize_chat_body(data: dict[str, Any]) -> dict[str, Any]:
    if not data.get("max_tokens") and data.get("max_completion_tokens"):
        data["max_tokens"] = data["max_completion_tokens"]
    messages = data.get("messages")
    if isinstance(messages, list):
        fixed = []
        for message in messages:
            if not isinstance(message, dict):
                fixed.append(message)
                continue
            content = message.get("content")
            has_images = isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") == "image_url" for p in content
            )
            if has_images:
                fixed.append({"role": message.get("role", "user"), "content": content})
            else:
                fixed.extend(normalize_messages([message]))
        data["messages"] = fixed
    return data


# ---- knowledge bases as models -------------------------------------------------------------------

# FastChat's two routes are replaced by ones that also know the kb: models. (Its module-level name
# create_chat_completion is taken by the later /api/v1 route, so the endpoints come from the routes.)
_REPLACED = ("/v1/models", "/v1/chat/completions")
_fastchat_models, _fastchat_chat = (
    next(route.endpoint for route in app.router.routes if getattr(route, "path", None) == path) for path in _REPLACED
)
app.router.routes = [route for route in app.router.routes if getattr(route, "path", None) not in _REPLACED]


class KbAwareChatRequest(ChatCompletionRequest):
    # Extra fields (top_k, score_threshold, search_mode, prompt_name) are kept for kb: models.
    model_config = ConfigDict(extra="allow")


@app.get("/v1/models", dependencies=[Depends(fastchat_gateway.check_api_key)])
async def show_available_models():
    """FastChat's models, then one per knowledge base (skipped, with a warning, when the API server is down)."""
    models = await _fastchat_models()
    try:
        names = await kb_models.kb_model_names(_http(), _api_server)
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning(
            "knowledge-base models left out: the API server (%s) did not list them: %s", _api_server.url, exc
        )
        names = []
    for name in names:
        models.data.append(
            ModelCard(id=name, root=name, owned_by=kb_models.KB_MODEL_OWNER, permission=[ModelPermission()])
        )
    return models


@app.post("/v1/chat/completions", dependencies=[Depends(fastchat_gateway.check_api_key)])
async def create_chat_completion(request: KbAwareChatRequest):
    kb_name = kb_models.kb_name_for(request.model)
    if kb_name is None:
        return await _fastchat_chat(request)
    return await kb_models.chat(_http(), _api_server, request.model, kb_name, request.model_dump(exclude_unset=True))


@app.get("/health")
async def health() -> dict:
    return {"status": "ok", "controller_address": fastchat_gateway.app_settings.controller_address}


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="chatkb OpenAI-compatible gateway (/v1 on top of FastChat)")
    parser.add_argument("--host", default=settings.FSCHAT_OPENAI_API.host)
    parser.add_argument("--port", type=int, default=settings.FSCHAT_OPENAI_API.port)
    parser.add_argument("--controller-address", default=settings.FSCHAT_CONTROLLER.url)
    parser.add_argument(
        "--api-keys",
        type=lambda s: [k for k in s.split(",") if k],
        default=None,
        help="comma-separated keys clients must send as Bearer tokens (default: API_KEYS from settings)",
    )
    parser.add_argument("--api-address", default=settings.API_SERVER.url, help="the API server that answers kb: models")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    global _api_server
    _api_server = kb_models.ApiServer(args.api_address.rstrip("/"), _api_server.key)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    fastchat_gateway.app_settings.controller_address = args.controller_address.rstrip("/")
    keys = args.api_keys if args.api_keys is not None else list(settings.API_KEYS)
    fastchat_gateway.app_settings.api_keys = keys or None
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(NormalizeRequests)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
