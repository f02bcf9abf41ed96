"""One generic worker for any OpenAI-compatible upstream (OpenAI, Ollama, Xinference, vLLM, a remote FastChat...).

    python -m server.model_workers.proxy_worker --model-name my-gpt --port 21001

The name is a key of ONLINE_LLM_MODEL in settings::

    ONLINE_LLM_MODEL:
      my-gpt: {api_base_url: "https://api.openai.com/v1", api_key: "sk-...", model_name: gpt-4o-mini}
      ollama-qwen: {api_base_url: "http://127.0.0.1:11434/v1", model_name: "qwen2.5:7b"}

Chat requests are forwarded as messages to ``{api_base_url}/chat/completions`` (streamed);
plain completions go to ``{api_base_url}/completions``; with ``embeddings: true`` the worker
also serves ``/v1/embeddings`` through ``{api_base_url}/embeddings``. This replaces
Chatchat's per-vendor online workers: every vendor that speaks the OpenAI protocol works.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from configs import OnlineModelConfig, get_settings
from server.model_workers.base import (
    ChatkbWorker,
    advertised_address,
    concurrency_limit,
    configure_logging,
    error_chunk,
    normalize_messages,
    serve,
    settings_or_exit,
    worker_arg_parser,
)

logger = logging.getLogger("chatkb.worker")

DEFAULT_ONLINE_CONTEXT = 32768


class ProxyWorker(ChatkbWorker):
    def __init__(self, *, model_name: str, config: OnlineModelConfig, timeout: float = 300.0, **kwargs):
        super().__init__(model_names=[model_name], **kwargs)
        self.config = config
        self.timeout = timeout
        self.device = "remote"
        self.context_len = get_settings().worker_config(model_name).max_context or DEFAULT_ONLINE_CONTEXT
        self._client: httpx.AsyncClient | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "llm", "device": "remote", "upstream_model": self.config.model_name}

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=10.0))
        return self._client

    def _url(self, path: str) -> str:
        return self.config.api_base_url.rstrip("/") + path

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key or "EMPTY"
        return {"Authorization": f"Bearer {key}"}

    async def generate_stream(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body: dict[str, Any] = {"model": self.config.model_name, "stream": True}
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
            if params.get(ours) is not None:
                body[theirs] = params[ours]
        # Forward max_tokens only when the client sent one: the gateway's own default is the context size.
        max_tokens = params.get("requested_max_tokens", params.get("max_new_tokens"))
        if max_tokens:
            body["max_tokens"] = int(max_tokens)
        if params.get("stop"):
            body["stop"] = params["stop"]
        if params.get("messages"):
            body["messages"] = normalize_messages(params["messages"])
            path, chat = "/chat/completions", True
        else:
            body["prompt"] = params.get("prompt") or ""
            path, chat = "/completions", False
        text = ""
        finish: str | None = None
        usage: dict[str, int] | None = None
        try:
            async with self.client.stream("POST", self._url(path), json=body, headers=self._headers()) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    yield error_chunk(f"upstream {self.config.api_base_url} answered {response.status_code}: {detail}")
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except ValueError:
                        continue
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        if piece:
                            text += piece
                            yield self._chunk(params, text, None, usage)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except httpx.HTTPError as exc:
            yield error_chunk(f"upstream {self.config.api_base_url} failed: {exc!r}")
            return
        yield self._chunk(params, text, finish or "stop", usage)

    def _chunk(self, params: dict[str, Any], text: str, finish: str | None, usage: dict[str, int] | None):
        if not usage:
            prompt_tokens = self.count_tokens(params.get("prompt") or "")
            completion_tokens = self.count_tokens(text) if text else 0
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return {"text": text, "error_code": 0, "usage": usage, "finish_reason": finish}

    async def get_embeddings_async(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.config.embeddings:
            return error_chunk(f"{self.model_names[0]} is not configured for embeddings (embeddings: true)")
        body = {"model": self.config.model_name, "input": params.get("input") or []}
        try:
            response = await self.client.post(self._url("/embeddings"), json=body, headers=self._headers())
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return error_chunk(f"upstream embeddings failed: {exc!r}")
        rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        usage = data.get("usage") or {}
        return {
            "embedding": [row["embedding"] for row in rows],
            "token_num": int(usage.get("prompt_tokens") or 0),
            "error_code": 0,
        }

    async def change_model(self, new_model_name: str) -> dict[str, Any]:
        config = get_settings().ONLINE_LLM_MODEL.get(new_model_name)
        if config is None:
            return {"code": 500, "msg": f"the model {new_model_name} is not available: not in ONLINE_LLM_MODEL"}
        old = self.model_names[0]
        self.unregister_from_controller()
        self.config, self.model_names = config, [new_model_name]
        self.register_to_controller()
        return {"code": 200, "msg": f"success change model from {old} to {new_model_name}"}


def main(argv: list[str] | None = None) -> None:
    settings = settings_or_exit()
    parser = worker_arg_parser("chatkb proxy worker for an OpenAI-compatible upstream", settings)
    parser.add_argument("--model-name", required=True, help="a key of ONLINE_LLM_MODEL")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    config = settings.ONLINE_LLM_MODEL.get(args.model_name)
    if config is None:
        known = ", ".join(settings.ONLINE_LLM_MODEL) or "none configured"
        print(f"error: '{args.model_name}' is not in ONLINE_LLM_MODEL ({known}): add it to settings", flush=True)
        raise SystemExit(2)
    worker = ProxyWorker(
        model_name=args.model_name,
        config=config,
        timeout=settings.HTTPX_DEFAULT_TIMEOUT,
        controller_addr=args.controller_address,
        worker_addr=advertised_address(args.host, args.port, args.controller_address, args.worker_address),
        limit_worker_concurrency=concurrency_limit(args.limit_worker_concurrency, args.model_name, settings),
    )
    serve(worker, args.host, args.port, args.log_level)


if __name__ == "__main__":
    main()
