"""The knowledge-base page's check-and-repair controls (POST /knowledge_base/check_consistency)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webui_pages.api_client import ApiClient
from webui_pages.i18n import t


def consistency_section(api: ApiClient, kb_name: str) -> None:
    """A check button; when it finds problems, a table of them and a repair button."""
    state_key = f"consistency_{kb_name}"
    check_col, repair_col = st.columns(2)
    if check_col.button(t("kb_check"), key="kb_check", width="stretch"):
        st.session_state[state_key] = _run(api, kb_name, repair=False)
    found = st.session_state.get(state_key)
    can_repair = bool(found and found["problems"])
    if repair_col.button(t("kb_repair"), key="kb_repair", disabled=not can_repair, width="stretch"):
        with st.spinner(t("kb_repairing")):
            found = st.session_state[state_key] = _run(api, kb_name, repair=True)
    if found is not None:
        show_report(found)


def _run(api: ApiClient, kb_name: str, repair: bool) -> dict:
    result = api.check_consistency(kb_name, repair=repair)
    if not result.ok or not result.data:
        return {"error": result.msg, "problems": [], "remaining": None}
    return {**result.data[0], "error": ""}


def show_report(found: dict) -> None:
    if found["error"]:
        st.error(t("api_error", msg=found["error"]))
    elif found["remaining"] is not None:
        if found["remaining"]:
            st.warning(t("kb_repair_left", n=len(found["remaining"])))
            st.dataframe(problem_table(found["remaining"]), hide_index=True)
        else:
            st.success(t("kb_repaired", n=len(found["problems"])))
    elif found["problems"]:
        st.warning(t("kb_check_found", n=len(found["problems"])))
        st.dataframe(problem_table(found["problems"]), hide_index=True)
    else:
        st.success(t("kb_check_ok"))


def problem_table(problems: list[dict]) -> pd.DataFrame:
    rows = [
        {
            t("kb_problem"): p["description"],
            t("col_file"): p["file_name"],
            t("col_chunks"): p["chunks"] or "",
            t("kb_problem_fix"): p["action"],
        }
        for p in problems
    ]
    return pd.DataFrame(rows)
