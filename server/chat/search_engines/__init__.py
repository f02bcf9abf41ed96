"""Web search engines for search-engine chat and the agent's web-search tool.

Each engine module has ``check_configured()`` (raises SearchEngineNotConfigured) and
``search(query, top_k) -> list[SearchResult]`` (raises SearchEngineError). All HTTP goes
through SEARCH_PROXY when it is set.
"""

from __future__ import annotations

import asyncio
from types import ModuleType

from server.chat.search_engines import bing, duckduckgo, metaphor, searxng
from server.chat.search_engines.base import SearchEngineError, SearchEngineNotConfigured, SearchResult

ENGINES: dict[str, ModuleType] = {
    "bing": bing,
    "duckduckgo": duckduckgo,
    "metaphor": metaphor,
    "searxng": searxng,
}
# Other names users know the same engines by.
ALIASES = {"exa": "metaphor", "ddg": "duckduckgo"}

# Passages a long page is cut into when split_result asks for the best parts only.
SPLIT_CHUNK_SIZE = 500
SPLIT_CHUNK_OVERLAP = 50

__all__ = [
    "ENGINES",
    "SearchEngineError",
    "SearchEngineNotConfigured",
    "SearchResult",
    "engine_names",
    "resolve_engine",
    "search",
]


def engine_names() -> list[str]:
    return list(ENGINES)


def resolve_engine(name: str) -> ModuleType | None:
    return ENGINES.get(ALIASES.get(name, name))


async def search(name: str, query: str, top_k: int, split_result: bool = False) -> list[SearchResult]:
    engine = resolve_engine(name)
    if engine is None:
        raise SearchEngineError(f"未支持搜索引擎 {name}")
    results = await asyncio.to_thread(engine.search, query, top_k)
    if split_result:
        results = await asyncio.to_thread(best_passages, query, results, top_k)
    return results


def best_passages(query: str, results: list[SearchResult], top_k: int) -> list[SearchResult]:
    """Cut long page texts into passages and keep the ``top_k`` closest to the query."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from configs import get_settings
    from server.knowledge_base.embeddings import get_embeddings

    splitter = RecursiveCharacterTextSplitter(
        separators=["\n\n", "\n", ".", "。", " "], chunk_size=SPLIT_CHUNK_SIZE, chunk_overlap=SPLIT_CHUNK_OVERLAP
    )
    passages = [
        SearchResult(result.title, result.link, piece)
        for result in results
        for piece in splitter.split_text(result.snippet)
    ]
    if len(passages) <= top_k:
        return passages
    backend = get_embeddings(get_settings().EMBEDDING_MODEL)
    query_vector = backend.embed([query], is_query=True)[0]
    vectors = backend.embed([p.snippet for p in passages])
    ranked = sorted(zip(vectors @ query_vector, passages, strict=True), key=lambda pair: -float(pair[0]))
    return [passage for _, passage in ranked[:top_k]]
