"""The knowledge-base page's retrieval test: one question against the KB, or a questions file scored per mode.

Results live in session_state (per KB), so they stay on screen while the user touches other widgets.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webui_pages.api_client import ApiClient
from webui_pages.i18n import t

SEARCH_MODES = ("hybrid", "vector", "keyword")  # the first is the default, as SEARCH_MODE's is
EVAL_MODES = (*SEARCH_MODES, "hybrid+rerank")
SCORE_FIELDS = ("vector_score", "keyword_score", "vector_rank", "keyword_rank", "fused_rank", "rerank_score")
RANK_FIELDS = ("vector_rank", "keyword_rank", "fused_rank")
CHART_METRICS = ("hit@1", "hit@3", "hit@5", "mrr")
MAX_SEARCH_TOP_K = 100


def retrieval_test_tab(api: ApiClient, kb_name: str) -> None:
    search_part(api, kb_name)
    st.divider()
    evaluation_part(api, kb_name)


def mode_label(mode: str) -> str:
    labels = {
        "hybrid": t("rt_mode_hybrid"),
        "vector": t("rt_mode_vector"),
        "keyword": t("rt_mode_keyword"),
        "hybrid+rerank": t("rt_mode_rerank"),
    }
    return labels.get(mode, mode)


# ---- one question -----------------------------------------------------------------------------


def search_part(api: ApiClient, kb_name: str) -> None:
    from configs import get_settings

    default_top_k = min(int(get_settings().VECTOR_SEARCH_TOP_K), MAX_SEARCH_TOP_K)
    # A form, so Enter in the question box runs the search.
    with st.form("rt_search_form", border=False):
        query = st.text_input(t("rt_query"), placeholder=t("rt_query_placeholder"), key="rt_query")
        cols = st.columns([3, 1])
        mode = cols[0].selectbox(t("rt_mode"), SEARCH_MODES, format_func=mode_label, key="rt_mode")
        top_k = cols[1].number_input(t("rt_top_k"), 1, MAX_SEARCH_TOP_K, default_top_k, key="rt_top_k")
        submitted = st.form_submit_button(t("rt_search"), type="primary", key="rt_search")
    state_key = f"_rt_search_{kb_name}"
    if submitted:
        st.session_state[state_key] = run_search(api, kb_name, query, mode, int(top_k))
    if state_key in st.session_state:
        show_hits(st.session_state[state_key])


def run_search(api: ApiClient, kb_name: str, query: str, mode: str, top_k: int) -> dict:
    if not query.strip():
        return {"error": t("rt_query_empty")}
    # score_threshold 1.0: show every hit, a test is about ranking, not about the chat's cut-off.
    result = api.search_kb_docs(kb_name, query=query.strip(), top_k=top_k, score_threshold=1.0, search_mode=mode)
    if not result.ok or not isinstance(result.data, list):
        return {"error": t("api_error", msg=result.msg)}
    return {"query": query.strip(), "mode": mode, "hits": result.data}


def hit_table(hits: list[dict]) -> pd.DataFrame:
    """One row per hit; score columns the server did not send (older server, no reranker) are left out."""
    labels = {
        "vector_score": t("rt_col_vector_score"),
        "keyword_score": t("rt_col_keyword_score"),
        "vector_rank": t("rt_col_vector_rank"),
        "keyword_rank": t("rt_col_keyword_rank"),
        "fused_rank": t("rt_col_fused_rank"),
        "rerank_score": t("rt_col_rerank_score"),
    }
    rows = []
    for index, hit in enumerate(hits, start=1):
        meta = hit.get("metadata") or {}
        row = {
            t("rt_col_rank"): meta.get("rank", index),
            t("rt_col_source"): meta.get("source", ""),
            t("rt_col_mode"): meta.get("search_mode"),
            t("rt_col_score"): hit.get("score"),
        }
        row.update({labels[name]: meta.get(name) for name in SCORE_FIELDS})
        rows.append(row)
    table = pd.DataFrame(rows).dropna(axis="columns", how="all")
    for name in RANK_FIELDS:  # a chunk found by one side only has no rank on the other: keep ints, not 3.0
        if labels[name] in table:
            table[labels[name]] = table[labels[name]].astype("Int64")
    return table


def show_hits(state: dict) -> None:
    if "error" in state:
        st.error(state["error"])
        return
    hits = state["hits"]
    if not hits:
        st.info(t("rt_no_hits"))
        return
    st.caption(t("rt_hits_caption", query=state["query"], n=len(hits), mode=mode_label(state["mode"])))
    st.dataframe(hit_table(hits), hide_index=True, width="stretch")
    for index, hit in enumerate(hits, start=1):
        meta = hit.get("metadata") or {}
        score = hit.get("score")
        label = t(
            "rt_chunk",
            rank=meta.get("rank", index),
            source=meta.get("source", ""),
            score=f"{score:.4f}" if isinstance(score, (int, float)) else "",
        )
        with st.expander(label):
            st.text(hit.get("page_content", ""))


# ---- a questions file -------------------------------------------------------------------------


def evaluation_part(api: ApiClient, kb_name: str) -> None:
    st.subheader(t("rt_eval_title"))
    st.caption(t("rt_eval_hint"))
    upload = st.file_uploader(t("rt_eval_file"), type=["jsonl", "csv"], key=f"rt_eval_file_{kb_name}")
    cols = st.columns([3, 1])
    modes = cols[0].multiselect(
        t("rt_eval_modes"), EVAL_MODES, default=list(SEARCH_MODES), format_func=mode_label, key="rt_eval_modes"
    )
    top_k = cols[1].number_input(t("rt_top_k"), 1, 100, 5, key="rt_eval_top_k")
    state_key = f"_rt_eval_{kb_name}"
    if st.button(t("rt_eval_run"), disabled=upload is None, type="primary", key="rt_eval_run"):
        with st.spinner(t("rt_eval_running")):
            # No modes picked: let the server use its defaults.
            result = api.evaluate_retrieval(kb_name, (upload.name, upload.getvalue()), modes or None, int(top_k))
        ok = result.ok and isinstance(result.data, dict)
        st.session_state[state_key] = result.data if ok else {"error": t("api_error", msg=result.msg)}
    if state_key in st.session_state:
        show_evaluation(st.session_state[state_key])


def metrics_table(results: list[dict]) -> pd.DataFrame:
    """Metric names stay the server's (hit@1, mrr, recall@5): they are the same in every language."""
    rows = []
    for row in results:
        recall = {key: value for key, value in row.items() if key.startswith("recall@")}
        rows.append(
            {
                t("rt_col_mode"): row.get("mode"),
                t("rt_col_questions"): row.get("questions"),
                **{metric: row.get(metric) for metric in CHART_METRICS},
                **recall,
                t("rt_col_mean_ms"): row.get("mean_search_ms"),
            }
        )
    return pd.DataFrame(rows)


def show_evaluation(state: dict) -> None:
    if "error" in state:
        st.error(state["error"])
        return
    results = state.get("results") or []
    st.caption(t("rt_eval_summary", n=state.get("questions", 0), top_k=state.get("top_k", "")))
    if not results:
        return
    st.dataframe(metrics_table(results), hide_index=True, width="stretch")
    chart = pd.DataFrame(
        {metric: [row.get(metric) for row in results] for metric in CHART_METRICS},
        index=pd.Index([row.get("mode") for row in results], name=t("rt_col_mode")),
    )
    st.bar_chart(chart, stack=False)  # side by side: the metrics are not parts of a whole
    for row in results:
        misses = row.get("misses") or []
        with st.expander(t("rt_misses", mode=row.get("mode"), n=len(misses))):
            if misses:
                st.markdown("\n".join(f"- {question}" for question in misses))
            else:
                st.write(t("rt_no_misses"))
