"""DuckDuckGo through the ``ddgs`` package (no key)."""

from __future__ import annotations

from configs import get_settings
from server.chat.search_engines.base import SEARCH_TIMEOUT_SECONDS, SearchEngineError, SearchResult


def check_configured() -> None:
    return None


def search(query: str, top_k: int) -> list[SearchResult]:
    from ddgs import DDGS  # imported here: the package is only needed when the engine is used

    try:
        items = DDGS(proxy=get_settings().SEARCH_PROXY or None, timeout=int(SEARCH_TIMEOUT_SECONDS)).text(
            query, max_results=top_k
        )
    except Exception as exc:  # ddgs wraps network and "no results" failures in its own exceptions
        if "no results" in str(exc).lower():
            return []
        raise SearchEngineError(f"{type(exc).__name__}: {exc}")
    return [SearchResult(i.get("title", ""), i.get("href", ""), i.get("body", "")) for i in items[:top_k]]
