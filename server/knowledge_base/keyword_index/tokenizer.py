"""Text to search terms, the same way for documents and queries.

* NFKC folds full-width letters and digits (Ａ１ -> A1) and compatibility forms; then lower case.
* Traditional Chinese is mapped to Simplified (OpenCC's t2s), so either script finds the other.
* Runs of Han characters go to jieba's search mode, which also emits the shorter words inside
  long ones (中华人民共和国 -> 中华, 华人, 人民, 共和, 共和国, ...), so a query need not match the
  document's segmentation exactly.
* Every other script is split on Unicode word boundaries (letters and digits, inner apostrophes).
* English words (ASCII letters) lose a possessive 's, skip Lucene's 33 English stop words, and
  are reduced to their Snowball stem (founded, founding -> found), as Lucene's EnglishAnalyzer does.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache

import jieba
import opencc
import Stemmer

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_CHAR = rf"(?:(?![{_HAN}])[^\W_])"  # a letter or digit of any script but Han
_TOKEN = re.compile(rf"[{_HAN}]+|{_WORD_CHAR}+(?:['’]{_WORD_CHAR}+)*")
_IS_HAN = re.compile(rf"[{_HAN}]")
_ENGLISH_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)*")
# Lucene's English stop set (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET).
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)
_init_lock = threading.Lock()


@lru_cache(maxsize=1)
def _segmenter() -> jieba.Tokenizer:
    # jieba logs its dictionary loading at INFO on its own handler; keep server logs quiet.
    jieba.setLogLevel(logging.WARNING)
    with _init_lock:
        segmenter = jieba.Tokenizer()
        segmenter.initialize()
    return segmenter


@lru_cache(maxsize=1)
def _english_stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _to_simplified() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalize(text: str) -> str:
    return _to_simplified().convert(unicodedata.normalize("NFKC", text).lower())


def tokenize(text: str) -> list[str]:
    """The search terms of ``text``, in order, repeats kept (BM25 counts them)."""
    terms: list[str] = []
    for match in _TOKEN.finditer(normalize(text)):
        word = match.group()
        if _IS_HAN.match(word):
            terms.extend(term for term in _segmenter().cut_for_search(word) if term.strip())
        elif _ENGLISH_WORD.fullmatch(word):
            english = _english_term(word)
            if english:
                terms.append(english)
        else:
            terms.append(word)
    return terms


def _english_term(word: str) -> str | None:
    word = word.replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if word in ENGLISH_STOP_WORDS:
        return None
    return _english_stemmer().stemWord(word)
