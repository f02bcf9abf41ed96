"""The tokenizer and the in-place BM25 index, on their own."""

import math
import random
from collections import Counter

import pytest

from server.knowledge_base.keyword_index import BM25Index, tokenize


def test_traditional_and_simplified_chinese_give_the_same_terms():
    assert tokenize("資料庫的檢索系統") == tokenize("资料库的检索系统")
    assert "检索" in tokenize("資料庫的檢索系統")


def test_chinese_search_mode_also_emits_the_words_inside_long_words():
    terms = tokenize("中华人民共和国")
    assert {"中华", "人民", "共和国", "中华人民共和国"} <= set(terms)


def test_han_runs_and_digits_split_apart_and_full_width_folds():
    assert tokenize("成立於1949年") == ["成立", "于", "1949", "年"]
    assert tokenize("ＧＰＴ４ Ｈｅｌｌｏ") == ["gpt4", "hello"]


def test_english_words_are_stemmed_and_stop_words_dropped():
    assert tokenize("The founders founded the University's library") == ["founder", "found", "universiti", "librari"]
    assert tokenize("It is in the box") == ["box"]


def test_other_scripts_split_on_unicode_word_boundaries():
    assert tokenize("Café naïve — Москва, 서울 특별시!") == ["café", "naïve", "москва", "서울", "특별시"]


def build(docs: dict[int, str]) -> BM25Index:
    index = BM25Index()
    for key, text in docs.items():
        index.add(key, tokenize(text))
    return index


def test_rare_terms_weigh_more_and_only_matching_documents_come_back():
    index = build({1: "apple banana", 2: "banana cherry", 3: "banana banana grape", 4: "kiwi"})
    hits = index.search(tokenize("apple banana"), 10)
    assert [hit.key for hit in hits][0] == 1
    assert 4 not in [hit.key for hit in hits]
    assert index.search(tokenize("durian"), 10) == []


def test_scores_match_the_bm25_formula_and_search():
    index = build({1: "apple banana", 2: "banana cherry", 3: "kiwi kiwi"})
    (hit,) = index.search(["appl"], 5)
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    average = (2 + 2 + 2) / 3
    expected = idf * (1 * 2.2) / (1 + 1.2 * (1 - 0.75 + 0.75 * 2 / average))
    assert hit.key == 1 and hit.score == pytest.approx(expected)
    assert index.scores(["appl"], [1, 2, 99]) == [pytest.approx(expected), 0.0, 0.0]


def test_removing_and_replacing_documents_keeps_postings_exact():
    index = build({1: "apple", 2: "apple pie"})
    index.remove(1)
    assert [hit.key for hit in index.search(["appl"], 5)] == [2]
    index.add(2, tokenize("cherry"))  # same key again: replaces
    assert index.search(["appl"], 5) == [] and [h.key for h in index.search(["cherri"], 5)] == [2]
    assert index.keys() == {2} and len(index) == 1
    index.remove(2)
    assert index.search(["cherri"], 5) == [] and len(index) == 0


def test_an_index_without_per_document_terms_scores_the_same_and_removes_exactly():
    docs = {1: "apple banana", 2: "banana cherry banana", 3: "kiwi apple pie", 4: "grape", 5: "apple apple kiwi"}
    full, lean = BM25Index(), BM25Index(keep_terms=False)
    for key, text in docs.items():
        full.add(key, tokenize(text))
        lean.add(key, tokenize(text))
    lean.remove(2, tokenize(docs[2]))  # the caller passes the terms it stored
    lean.remove(4, ["not", "its", "terms"])  # wrong terms: found by a scan instead
    lean.remove(99, ["appl"])  # unknown key: nothing happens
    full.remove(2)
    full.remove(4)
    query = tokenize("apple kiwi banana grape")
    assert lean.search(query, 10) == full.search(query, 10)
    assert lean.scores(query, [1, 2, 3, 5, 99]) == full.scores(query, [1, 2, 3, 5, 99])
    assert lean.keys() == full.keys() == {1, 3, 5} and lean.term_counts(5) == full.term_counts(5)
    assert lean.search(["grape"], 5) == [] and lean.search(["cherri"], 5) == []
    lean.add(1, tokenize("cherry"))  # the same key again replaces it, without its terms kept
    assert [h.key for h in lean.search(["cherri"], 5)] == [1] and lean.search(["banana"], 5) == []


def _reference_scores(docs: dict[int, list[str]], query: list[str]) -> dict[int, float]:
    """BM25 computed from scratch over the live documents (the formula in bm25.py's docstring)."""
    total = len(docs)
    average = sum(len(terms) for terms in docs.values()) / total
    frequency = Counter(term for terms in docs.values() for term in set(terms))
    found = {}
    for key, terms in docs.items():
        counts = Counter(terms)
        score = sum(
            math.log(1 + (total - frequency[t] + 0.5) / (frequency[t] + 0.5))
            * n
            * counts[t]
            * 2.2
            / (counts[t] + 1.2 * (1 - 0.75 + 0.75 * len(terms) / average))
            for t, n in Counter(query).items()
            if t in counts
        )
        if score:
            found[key] = score
    return found


@pytest.mark.parametrize("keep_terms", [True, False])
def test_scores_stay_exact_through_compaction_and_renumbering(keep_terms):
    """Thousands of adds, removals and replacements (most documents removed, so the packed postings are
    filtered and the slots renumbered) leave an index that scores exactly as one built from scratch."""
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(60)]
    index, live = BM25Index(keep_terms=keep_terms), {}
    for key in range(3000):
        live[key] = [rng.choice(vocabulary[: 5 + key % 55]) for _ in range(rng.randint(1, 12))]
        index.add(key, live[key])
    for key in rng.sample(sorted(live), 2400):
        index.remove(key, None if keep_terms else live.pop(key))
        live.pop(key, None)
    for key in rng.sample(sorted(live), 200):  # replaced in place: a new slot for an old key
        live[key] = [rng.choice(vocabulary) for _ in range(rng.randint(1, 12))]
        index.add(key, live[key])
    query = ["w1", "w7", "w7", "w42", "absent"]
    expected = _reference_scores(live, query)
    hits = index.search(query, 50)
    best = sorted(expected.values(), reverse=True)[:50]
    assert [hit.score for hit in hits] == pytest.approx(best)
    assert all(expected[hit.key] == pytest.approx(hit.score) for hit in hits)
    some = sorted(live)[:40] + [10**9]
    assert index.scores(query, some) == pytest.approx([expected.get(k, 0.0) for k in some])
    assert len(index) == len(live) and index.keys() == set(live)
    assert index.term_counts(some[0]) == dict(Counter(live[some[0]]))


def test_an_index_saved_as_arrays_comes_back_scoring_and_changing_the_same():
    """A store saves its keyword index beside its vector index snapshot; loading it must give the same
    index (removed documents, dead postings, empty documents and non-ASCII terms included)."""
    import io

    import numpy as np

    rng = random.Random(3)
    vocabulary = [f"w{i}" for i in range(40)] + ["检索", "知识库", "café"]
    index, live = BM25Index(keep_terms=False), {}
    for key in range(500):
        live[key] = [rng.choice(vocabulary) for _ in range(rng.randint(0, 10))]
        index.add(key, live[key])
    for key in rng.sample(sorted(live), 300):
        index.remove(key, live.pop(key))
    buffer = io.BytesIO()
    np.savez(buffer, **index.to_arrays())
    loaded = BM25Index.from_arrays(np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False))
    query = ["w3", "检索", "café", "w3", "absent"]
    assert loaded.search(query, 30) == index.search(query, 30) != []
    assert loaded.scores(query, sorted(live)) == index.scores(query, sorted(live))
    assert loaded.keys() == index.keys() == set(live) and len(loaded) == len(live)
    for copy in (index, loaded):  # and it goes on changing exactly as the original does
        copy.remove(sorted(live)[0], live[sorted(live)[0]])
        copy.add(10_000, ["知识库", "w1"])
    assert loaded.search(query + ["知识库"], 30) == index.search(query + ["知识库"], 30)

    arrays = dict(index.to_arrays())
    arrays["slots"] = arrays["slots"][:-1]  # a damaged file is refused, not half loaded
    with pytest.raises(ValueError):
        BM25Index.from_arrays(arrays)
    with pytest.raises(ValueError):
        BM25Index().to_arrays()  # keeps documents' terms: not what arrays hold
