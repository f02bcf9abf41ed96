"""SearXNG through its JSON API: ``GET {SEARXNG_URL}/search?q=...&format=json``.

The instance must list ``json`` under ``search.formats`` in its settings.yml.
"""

from __future__ import annotations

from configs import get_settings
from server.chat.search_engines.base import SearchEngineError, SearchEngineNotConfigured, SearchResult, get_json


def check_configured() -> None:
    if not get_settings().SEARXNG_URL:
        raise SearchEngineNotConfigured("要使用SearXNG搜索引擎，需要设置 `SEARXNG_URL`")


def search(query: str, top_k: int) -> list[SearchResult]:
    check_configured()
    url = get_settings().SEARXNG_URL.rstrip("/") + "/search"
    data = get_json("GET", url, params={"q": query, "format": "json"})
    if not isinstance(data.get("results"), list):
        raise SearchEngineError(f"{url} answered without a results list")
    return [
        SearchResult(item.get("title") or item.get("url", ""), item.get("url", ""), item.get("content") or "")
        for item in data["results"][:top_k]
        if isinstance(item, dict)
    ]
