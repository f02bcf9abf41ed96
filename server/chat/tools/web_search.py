"""Search the web from the agent, with the default engine of the settings."""

from __future__ import annotations

from configs import get_settings
from server.chat import search_engines


def search_internet(query: str) -> str:
    settings = get_settings()
    engine = search_engines.resolve_engine(settings.DEFAULT_SEARCH_ENGINE)
    if engine is None:
        raise ValueError(f"unknown DEFAULT_SEARCH_ENGINE {settings.DEFAULT_SEARCH_ENGINE!r}")
    engine.check_configured()
    results = engine.search(query, settings.SEARCH_ENGINE_TOP_K)
    if not results:
        return "no results"
    return "\n\n".join(f"{r.title} ({r.link}): {r.snippet}" for r in results)
