"""Bing Web Search API v7 (needs BING_SUBSCRIPTION_KEY)."""

from __future__ import annotations

from configs import get_settings
from server.chat.search_engines.base import SearchEngineNotConfigured, SearchResult, get_json


def check_configured() -> None:
    if not get_settings().BING_SUBSCRIPTION_KEY:
        raise SearchEngineNotConfigured("要使用Bing搜索引擎，需要设置 `BING_SUBSCRIPTION_KEY`")


def search(query: str, top_k: int) -> list[SearchResult]:
    check_configured()
    settings = get_settings()
    data = get_json(
        "GET",
        settings.BING_SEARCH_URL,
        params={"q": query, "count": top_k, "textDecorations": "false"},
        headers={"Ocp-Apim-Subscription-Key": settings.BING_SUBSCRIPTION_KEY},
    )
    pages = (data.get("webPages") or {}).get("value") or []
    return [SearchResult(p.get("name", ""), p.get("url", ""), p.get("snippet", "")) for p in pages[:top_k]]
