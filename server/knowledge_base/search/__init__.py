"""Retrieval over one store: vector, keyword (BM25) or hybrid search, then an optional reranker.

``prepare_query`` does the slow per-query work (embedding, tokenizing) before any store lock is
taken; ``rank_candidates`` runs under the store's lock and only reads; ``finish`` reranks (outside
the lock) and cuts to top_k. The ``score`` of every hit keeps Chatchat's meaning, (1 - cosine) / 2
of that chunk, also for chunks only the keyword side found, so ``score_threshold`` filters alike
in every mode. Each hit's ``details`` say why it was found; the API puts them in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from configs import Settings, get_settings
from server.knowledge_base.keyword_index import tokenize
from server.knowledge_base.search.fusion import fuse
from server.knowledge_base.search.reranker import UnknownRerankerModel, get_reranker
from server.knowledge_base.vector_stores.base import ScoredChunk, VectorStore, similarity_to_score

SearchMode = Literal["vector", "keyword", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)

__all__ = [
    "SEARCH_MODES",
    "PreparedQuery",
    "SearchMode",
    "SearchOptions",
    "UnknownRerankerModel",
    "finish",
    "prepare_query",
    "rank_candidates",
]


@dataclass(frozen=True)
class SearchOptions:
    mode: str
    rerank: bool
    candidates: int
    vector_weight: float
    keyword_weight: float
    rerank_candidates: int

    @classmethod
    def from_settings(
        cls, mode: str | None = None, rerank: bool | None = None, settings: Settings | None = None
    ) -> SearchOptions:
        settings = settings or get_settings()
        mode = mode or settings.SEARCH_MODE
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode '{mode}': use one of {', '.join(SEARCH_MODES)} (SEARCH_MODE)")
        return cls(
            mode=mode,
            rerank=settings.USE_RERANKER if rerank is None else rerank,
            candidates=settings.HYBRID_CANDIDATES,
            vector_weight=settings.HYBRID_VECTOR_WEIGHT,
            keyword_weight=settings.HYBRID_KEYWORD_WEIGHT,
            rerank_candidates=settings.RERANKER_CANDIDATES,
        )

    def pool_size(self, top_k: int) -> int:
        """How many ranked candidates to take from the store before reranking and cutting to top_k."""
        return max(top_k, self.rerank_candidates) if self.rerank else top_k


@dataclass(frozen=True)
class PreparedQuery:
    text: str
    vector: np.ndarray
    terms: list[str]


def prepare_query(text: str, embed_query) -> PreparedQuery:
    """``embed_query(text)`` gives the query's unit vector (with the model's query prefix, if any)."""
    return PreparedQuery(text, np.asarray(embed_query(text), dtype=np.float32), tokenize(text))


def rank_candidates(
    store: VectorStore, query: PreparedQuery, top_k: int, score_threshold: float, options: SearchOptions
) -> list[ScoredChunk]:
    """The best ``options.pool_size(top_k)`` chunks in the chosen mode, best first, above the threshold."""
    pool = options.pool_size(top_k)
    if options.mode == "vector":
        # Chatchat's search exactly: FAISS's top hits, then the threshold.
        found = store.search(query.vector, pool, score_threshold)
        for rank, hit in enumerate(found, start=1):
            hit.details = {
                "search_mode": "vector",
                "vector_score": _cosine(hit.score),
                "vector_rank": rank,
                "fused_rank": rank,
            }
        return found
    per_side = max(pool, options.candidates)
    keyword_hits = store.keyword_search(query.terms, per_side)
    vector_hits = store.search(query.vector, per_side) if options.mode == "hybrid" else []
    vector_rank = {hit.chunk.doc_id: rank for rank, hit in enumerate(vector_hits, start=1)}
    keyword_rank = {chunk.doc_id: rank for rank, (chunk, _) in enumerate(keyword_hits, start=1)}
    chunks = {hit.chunk.doc_id: hit.chunk for hit in vector_hits} | {chunk.doc_id: chunk for chunk, _ in keyword_hits}
    doc_ids = list(dict.fromkeys([*vector_rank, *keyword_rank]))
    if not doc_ids:
        return []
    similarities = store.similarities(query.vector, doc_ids)
    keyword_scores = _keyword_scores(store, query.terms, doc_ids, keyword_hits)
    if options.mode == "keyword":
        order = np.arange(len(doc_ids))  # already in BM25 order
    else:
        fused = fuse(similarities, keyword_scores, options.vector_weight, options.keyword_weight)
        order = np.argsort(-fused, kind="stable")
    ranked = []
    for position in order:
        doc_id = doc_ids[position]
        score = similarity_to_score(float(similarities[position]))
        if score > score_threshold:
            continue
        details = {
            "search_mode": options.mode,
            "vector_score": round(float(similarities[position]), 6),
            "keyword_score": round(float(keyword_scores[position]), 6),
            "vector_rank": vector_rank.get(doc_id),
            "keyword_rank": keyword_rank.get(doc_id),
            "fused_rank": len(ranked) + 1,
        }
        ranked.append(ScoredChunk(chunks[doc_id], score, details))
        if len(ranked) == pool:
            break
    return ranked


def _keyword_scores(store: VectorStore, terms: list[str], doc_ids: list[str], keyword_hits) -> np.ndarray:
    """BM25 of every candidate: the keyword side's own scores, and the rest scored for the query."""
    known = {chunk.doc_id: score for chunk, score in keyword_hits}
    unscored = [doc_id for doc_id in doc_ids if doc_id not in known]
    known.update(zip(unscored, store.keyword_scores(terms, unscored), strict=True))
    return np.array([known[doc_id] for doc_id in doc_ids], dtype=np.float64)


def finish(query: PreparedQuery, ranked: list[ScoredChunk], top_k: int, options: SearchOptions) -> list[ScoredChunk]:
    """Rerank the candidates when asked (outside any store lock: a cross-encoder is slow), cut to top_k.
    ``rank`` in the details is the final position; ``fused_rank`` the one before reranking."""
    if options.rerank and ranked:
        scores = get_reranker().score(query.text, [hit.chunk.page_content for hit in ranked])
        for hit, rerank_score in zip(ranked, scores, strict=True):
            hit.details = {**hit.details, "rerank_score": round(float(rerank_score), 6)}
        order = np.argsort(-scores, kind="stable")
        ranked = [ranked[i] for i in order]
    hits = ranked[:top_k]
    for rank, hit in enumerate(hits, start=1):
        hit.details = {**hit.details, "rank": rank}
    return hits


def _cosine(score: float) -> float:
    return round(1.0 - 2.0 * score, 6)
