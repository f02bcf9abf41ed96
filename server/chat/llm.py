"""The one place that knows how to reach a language model.

Local models are served by FastChat workers behind the OpenAI-compatible gateway
(FSCHAT_OPENAI_API); models listed in ONLINE_LLM_MODEL are called at their own base URL.
Either way the caller gets a LangChain chat model, so every chat mode works with any
model the gateway (or an online endpoint) serves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from langchain_openai import ChatOpenAI, OpenAI

from configs import get_settings

# How long the gateway's model list is trusted before it is asked again.
MODEL_LIST_TTL_SECONDS = 10.0
# A local model on a busy CPU can take a while before its first token.
LLM_REQUEST_TIMEOUT_SECONDS = 300.0
COMPLETION_FALLBACK_MAX_TOKENS = 1024


class ModelNotFound(LookupError):
    def __init__(self, model_name: str, available: list[str]):
        super().__init__(model_name)
        self.model_name = model_name
        self.available = available


class GatewayUnavailable(ConnectionError):
    """The OpenAI-compatible gateway did not answer its model list."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    model: str  # the name the endpoint knows the model by


def resolve_endpoint(model_name: str) -> Endpoint:
    settings = get_settings()
    online = settings.ONLINE_LLM_MODEL.get(model_name)
    if online is not None:
        return Endpoint(online.api_base_url.rstrip("/"), online.api_key or "EMPTY", online.model_name)
    return Endpoint(f"{settings.FSCHAT_OPENAI_API.url}/v1", _gateway_key(), model_name)


def _gateway_key() -> str:
    # The gateway accepts any key unless it was started with keys; then the first API key is used.
    keys = get_settings().API_KEYS
    return keys[0] if keys else "EMPTY"


def normalize_max_tokens(max_tokens: int | None) -> int | None:
    """Chatchat treats max_tokens <= 0 as "no limit"; no limit means the configured MAX_TOKENS."""
    if max_tokens is None or max_tokens <= 0:
        return get_settings().MAX_TOKENS
    return max_tokens


class CompatibleChatOpenAI(ChatOpenAI):
    """ChatOpenAI that sends ``max_tokens``: FastChat (and many OpenAI-compatible servers) ignore
    ``max_completion_tokens``, which langchain-openai sends instead, and would generate unbounded."""

    def _get_request_payload(self, input_, *, stop=None, **kwargs) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        return payload


def chat_model(model_name: str, temperature: float, max_tokens: int | None, **kwargs) -> ChatOpenAI:
    endpoint = resolve_endpoint(model_name)
    return CompatibleChatOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        model=endpoint.model,
        temperature=temperature,
        max_tokens=normalize_max_tokens(max_tokens),
        streaming=True,
        max_retries=1,
        timeout=LLM_REQUEST_TIMEOUT_SECONDS,
        **kwargs,
    )


def completion_model(model_name: str, temperature: float, max_tokens: int | None, echo: bool = False) -> OpenAI:
    """A plain-completion (``/v1/completions``) model, for ``/other/completion``."""
    endpoint = resolve_endpoint(model_name)
    return OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        model=endpoint.model,
        temperature=temperature,
        # langchain's -1 ("fill the context") needs a tokenizer download; use a plain bound instead.
        max_tokens=normalize_max_tokens(max_tokens) or COMPLETION_FALLBACK_MAX_TOKENS,
        streaming=True,
        max_retries=1,
        timeout=LLM_REQUEST_TIMEOUT_SECONDS,
        model_kwargs={"echo": echo} if echo else {},
    )


# ---- which models exist ---------------------------------------------------------------------

_model_cache: dict[str, tuple[float, list[str]]] = {}
_model_cache_lock = asyncio.Lock()


async def gateway_models(refresh: bool = False) -> list[str]:
    """Names the gateway serves now (cached for a few seconds)."""
    url = f"{get_settings().FSCHAT_OPENAI_API.url}/v1/models"
    async with _model_cache_lock:
        cached = _model_cache.get(url)
        if cached and not refresh and time.monotonic() - cached[0] < MODEL_LIST_TTL_SECONDS:
            return cached[1]
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.get(url, headers={"Authorization": f"Bearer {_gateway_key()}"})
                response.raise_for_status()
                names = [item["id"] for item in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise GatewayUnavailable(f"{url}: {exc}") from exc
        _model_cache[url] = (time.monotonic(), names)
        return names


async def ensure_model(model_name: str) -> None:
    """Raise ModelNotFound (or GatewayUnavailable) unless ``model_name`` can answer."""
    if model_name in get_settings().ONLINE_LLM_MODEL:
        return
    names = await gateway_models()
    if model_name not in names:
        names = await gateway_models(refresh=True)  # a worker may have registered a moment ago
    if model_name not in names:
        raise ModelNotFound(model_name, sorted(set(names) | set(get_settings().ONLINE_LLM_MODEL)))


def default_model_name() -> str:
    models = get_settings().LLM_MODELS
    return models[0] if models else ""
