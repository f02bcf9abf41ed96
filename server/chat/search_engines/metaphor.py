"""Metaphor, now Exa (needs METAPHOR_API_KEY): ``POST /search`` with the page text included."""

from __future__ import annotations

from configs import get_settings
from server.chat.search_engines.base import SearchEngineNotConfigured, SearchResult, get_json

# Page text kept per result; split_result cuts it into passages afterwards.
MAX_TEXT_CHARS = 3000


def check_configured() -> None:
    if not get_settings().METAPHOR_API_KEY:
        raise SearchEngineNotConfigured("要使用Metaphor搜索引擎，需要设置 `METAPHOR_API_KEY`")


def search(query: str, top_k: int) -> list[SearchResult]:
    check_configured()
    settings = get_settings()
    data = get_json(
        "POST",
        settings.METAPHOR_SEARCH_URL,
        json={"query": query, "numResults": top_k, "contents": {"text": {"maxCharacters": MAX_TEXT_CHARS}}},
        headers={"x-api-key": settings.METAPHOR_API_KEY},
    )
    results = data.get("results") or []
    return [
        SearchResult(r.get("title") or r.get("url", ""), r.get("url", ""), r.get("text") or r.get("extract") or "")
        for r in results[:top_k]
    ]
