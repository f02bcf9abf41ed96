"""Keyword search: BM25 over words, with jieba for Chinese and Unicode word rules for other scripts.

The index lives inside each knowledge base's store (see ``vector_stores.faiss_store``): it is kept
in step by every add and delete there, and each chunk's terms are committed with its row, so the
two never disagree.
"""

from server.knowledge_base.keyword_index.bm25 import BM25Index, KeywordHit
from server.knowledge_base.keyword_index.tokenizer import tokenize

__all__ = ["BM25Index", "KeywordHit", "tokenize"]
