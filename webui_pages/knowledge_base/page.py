"""The knowledge-base page: create and delete KBs, ingest files, manage files and their chunks."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from webui_pages.api_client import ApiClient, is_error_event
from webui_pages.common import ServiceStatus, flash, report, server_configs, show_flashes
from webui_pages.i18n import t
from webui_pages.knowledge_base.consistency import consistency_section
from webui_pages.knowledge_base.retrieval_test import retrieval_test_tab

NEW_KB = "__new_kb__"
VS_TYPES = ("faiss", "milvus", "zilliz", "pg")  # Chatchat's vs_type names; the API says which ones it supports
MAX_CHUNKS_SHOWN = 200  # editing more than this in one page is not useful and slows the browser


def knowledge_base_page(api: ApiClient, status: ServiceStatus) -> None:
    from configs import get_settings

    settings = get_settings()
    show_flashes()
    kbs = knowledge_bases(api)
    if kbs is None:
        return
    if "_kb_pick_next" in st.session_state:
        st.session_state["kb_pick"] = st.session_state.pop("_kb_pick_next")
    names = list(kbs)
    if st.session_state.get("kb_pick") not in [*names, NEW_KB]:
        st.session_state.pop("kb_pick", None)
    picked = st.selectbox(
        t("kb_page_select"),
        [*names, NEW_KB],
        format_func=lambda name: t("kb_new") if name == NEW_KB else _kb_label(kbs[name]),
        key="kb_pick",
    )
    if picked == NEW_KB:
        create_form(api, settings)
        import_form(api)
        return
    kb = kbs[picked]
    kb_header(api, kb)  # above the tabs: description and deletion concern the whole KB
    manage_tab, retrieval_tab = st.tabs([t("tab_manage"), t("tab_retrieval_test")])
    with manage_tab:
        chunking = chunking_settings(settings)
        upload_section(api, picked, chunking)
        rebuild_section(api, picked, chunking)
        consistency_section(api, picked)
        files = files_section(api, picked, chunking)
        chunks_section(api, picked, files)
    with retrieval_tab:
        retrieval_test_tab(api, picked)


def _kb_label(kb: dict) -> str:
    extra = [kb.get("vs_type"), kb.get("embed_model")]
    suffix = " · ".join(str(x) for x in extra if x)
    return f"{kb['kb_name']} ({suffix})" if suffix else kb["kb_name"]


def knowledge_bases(api: ApiClient) -> dict[str, dict] | None:
    """KB name -> details; falls back to bare names on a server without the details route."""
    details = api.list_knowledge_base_details()
    if details.ok and isinstance(details.data, list):
        return {row["kb_name"]: row for row in details.data if row.get("kb_name")}
    names = api.list_knowledge_bases()
    if not names.ok:
        st.error(t("api_error", msg=names.msg))
        return None
    return {name: {"kb_name": name} for name in names.data or []}


# ---- create / describe / delete ------------------------------------------------------------


def create_form(api: ApiClient, settings) -> None:
    configs = server_configs(api)
    default_embed = configs.get("EMBEDDING_MODEL") or settings.EMBEDDING_MODEL
    embed_models = [default_embed, *[m for m in configs.get("EMBEDDING_MODEL_PATHS", {}) if m != default_embed]]
    with st.form("create_kb", clear_on_submit=False):
        name = st.text_input(t("kb_name"), placeholder=t("kb_name_placeholder"), key="new_kb_name")
        info = st.text_input(t("kb_info"), placeholder=t("kb_info_placeholder"), key="new_kb_info")
        cols = st.columns(2)
        default_vs = configs.get("DEFAULT_VS_TYPE") or settings.DEFAULT_VS_TYPE
        vs_types = [default_vs, *[v for v in VS_TYPES if v != default_vs]]
        vs_type = cols[0].selectbox(t("vs_type"), vs_types)
        embed_model = cols[1].selectbox(t("embed_model"), embed_models)
        submitted = st.form_submit_button(t("kb_create"), type="primary")
    if not submitted:
        return
    if not name.strip():
        st.error(t("kb_name_empty"))
        return
    result = api.create_knowledge_base(name.strip(), vs_type, embed_model)
    if not result.ok:
        st.error(t("api_error", msg=result.msg))
        return
    if info.strip():
        api.update_kb_info(name.strip(), info.strip())
    flash("success", result.msg)
    st.session_state["_kb_pick_next"] = name.strip()
    st.rerun()


def kb_header(api: ApiClient, kb: dict) -> None:
    name = kb["kb_name"]
    if "file_count" in kb:
        st.caption(
            t("kb_summary", vs_type=kb.get("vs_type", "?"), embed_model=kb.get("embed_model", "?"), count=kb["file_count"])
        )
    cols = st.columns([4, 1])
    info = cols[0].text_input(t("kb_info"), value=kb.get("kb_info") or "", key=f"kb_info_{name}")
    if cols[1].button(t("kb_info_save"), key=f"kb_info_save_{name}"):
        report(api.update_kb_info(name, info))
        st.rerun()
    export_control(api, name)
    with st.expander(t("kb_delete")):
        confirmed = st.checkbox(t("kb_delete_confirm", name=name), key=f"kb_delete_confirm_{name}")
        if st.button(t("kb_delete"), disabled=not confirmed, type="primary", key=f"kb_delete_{name}"):
            report(api.delete_knowledge_base(name))
            st.rerun()


def export_control(api: ApiClient, kb_name: str) -> None:
    """Pack the knowledge base on request (it can take a while), then offer the zip for download."""
    state_key = f"kb_export_{kb_name}"
    with st.expander(t("kb_export")):
        st.caption(t("kb_export_hint"))
        if st.button(t("kb_export_prepare"), key=f"kb_export_prepare_{kb_name}"):
            with st.spinner(t("kb_exporting")):
                result = api.export_knowledge_base(kb_name)
            if result.ok and isinstance(result.data, bytes):
                st.session_state[state_key] = result.data
            else:
                st.error(t("api_error", msg=result.msg))
        archive = st.session_state.get(state_key)
        if archive is not None:
            st.download_button(
                t("kb_export_download", size=len(archive) // 1024),
                archive,
                file_name=f"{kb_name}.zip",
                mime="application/zip",
                key=f"kb_export_download_{kb_name}",
            )


def import_form(api: ApiClient) -> None:
    """Create a knowledge base from another instance's export, keeping its vectors."""
    st.divider()
    st.subheader(t("kb_import"))
    archive = st.file_uploader(t("kb_import_file"), type=["zip"], key="kb_import_file")
    name = st.text_input(t("kb_import_name"), key="kb_import_name")
    if not st.button(t("kb_import"), disabled=archive is None, key="kb_import_run"):
        return
    with st.spinner(t("kb_importing")):
        result = api.import_knowledge_base((archive.name, archive.getvalue()), name.strip())
    if not result.ok:
        st.error(t("api_error", msg=result.msg))
        return
    flash("success", result.msg)
    st.session_state["_kb_pick_next"] = result.data["kb_name"]
    st.rerun()


# ---- ingestion ------------------------------------------------------------------------------


def chunking_settings(settings) -> dict:
    with st.expander(t("upload_settings")):
        cols = st.columns(3)
        chunk_size = cols[0].number_input(t("chunk_size"), 1, 10000, int(settings.CHUNK_SIZE), key="chunk_size")
        overlap = cols[1].number_input(t("chunk_overlap"), 0, 5000, int(settings.OVERLAP_SIZE), key="chunk_overlap")
        cols[2].write("")
        zh_title = cols[2].checkbox(t("zh_title_enhance"), bool(settings.ZH_TITLE_ENHANCE), key="zh_title_enhance")
        override = st.checkbox(t("override"), False, key="override")
    return {
        "chunk_size": int(chunk_size),
        "chunk_overlap": int(overlap),
        "zh_title_enhance": bool(zh_title),
        "override": bool(override),
    }


def upload_section(api: ApiClient, kb_name: str, chunking: dict) -> None:
    round_key = f"upload_round_{kb_name}"
    files = st.file_uploader(
        t("upload_files"), accept_multiple_files=True, key=f"kb_upload_{kb_name}_{st.session_state.get(round_key, 0)}"
    )
    if not st.button(t("add_files"), disabled=not files, type="primary", key="add_files"):
        return
    duplicates: dict[str, str] = {}
    failed = ingest_with_progress(api, kb_name, [(f.name, f.getvalue()) for f in files], chunking, duplicates)
    ok = len(files) - len(failed)
    flash("success" if not failed else "warning", t("ingest_done", ok=ok, failed=len(failed)))
    if failed:
        flash("error", t("failed_files") + "\n\n" + "\n".join(f"- **{name}**: {why}" for name, why in failed.items()))
    if duplicates:
        lines = "\n".join(f"- **{name}** = {original}" for name, original in duplicates.items())
        flash("info", t("duplicate_files") + "\n\n" + lines)
    st.session_state[round_key] = st.session_state.get(round_key, 0) + 1  # a new, empty uploader
    st.rerun()  # draw the page again: the file count, the table and the uploader show the new state


def ingest_with_progress(
    api: ApiClient, kb_name: str, files: list[tuple[str, bytes]], chunking: dict, duplicates: dict | None = None
) -> dict:
    """One request per file, so the bar moves as files are ingested; returns {file: reason} of failures.

    Files whose content the knowledge base already had under another name go into ``duplicates``."""
    bar = st.progress(0.0)
    failed: dict[str, str] = {}
    for index, (name, content) in enumerate(files):
        bar.progress(index / len(files), text=t("ingesting", i=index + 1, n=len(files), name=name))
        result = api.upload_kb_docs([(name, content)], kb_name, **chunking)
        if not result.ok:
            failed[name] = result.msg
        elif isinstance(result.data, dict):
            failed.update(result.data.get("failed_files") or {})
            if duplicates is not None:
                duplicates.update(result.data.get("duplicate_files") or {})
    bar.progress(1.0)
    return failed


def rebuild_section(api: ApiClient, kb_name: str, chunking: dict) -> None:
    if not st.button(t("rebuild"), key="rebuild"):
        return
    bar = st.progress(0.0)
    errors = []
    options = {k: v for k, v in chunking.items() if k != "override"}
    for event in api.recreate_vector_store(kb_name, **options):
        if is_error_event(event):
            errors.append(event["msg"])
            continue
        total, finished = event.get("total") or 0, event.get("finished") or 0
        if total:
            bar.progress(min(finished / total, 1.0), text=t("rebuilding", finished=finished, total=total, doc=event.get("doc", "")))
    bar.progress(1.0, text=t("rebuild_done"))
    if errors:
        st.error("\n\n".join(errors))
    else:
        st.success(t("rebuild_done"))


# ---- files ---------------------------------------------------------------------------------


def file_rows(api: ApiClient, kb_name: str) -> list[dict] | None:
    """One dict per file; from the details route, or from list_files alone on an older server."""
    details = api.list_kb_file_details(kb_name)
    if details.ok and isinstance(details.data, list):
        return details.data
    names = api.list_kb_docs(kb_name)
    if not names.ok:
        st.error(t("api_error", msg=names.msg))
        return None
    return [{"file_name": name, "in_db": True} for name in names.data or []]


def _size(value) -> str:
    if not isinstance(value, (int, float)):
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def _mtime(value) -> str:
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M")
    return str(value or "")


def table_rows(rows: list[dict]) -> list[dict]:
    """The file table as the page shows it (localized names; columns the server left empty are dropped)."""
    table = [
        {
            t("col_no"): index + 1,
            t("col_file"): row.get("file_name", ""),
            t("col_loader"): row.get("document_loader", row.get("document_loader_name", "")),
            t("col_splitter"): row.get("text_splitter", row.get("text_splitter_name", "")),
            t("col_chunks"): row.get("docs_count", ""),
            t("col_size"): _size(row.get("file_size")),
            t("col_mtime"): _mtime(row.get("file_mtime")),
            t("col_in_vs"): "✓" if row.get("in_db", True) else "✗",
        }
        for index, row in enumerate(rows)
    ]
    empty = {key for key in (table[0] if table else {}) if all(line[key] in ("", None) for line in table)}
    return [{key: value for key, value in line.items() if key not in empty} for line in table]


def files_section(api: ApiClient, kb_name: str, chunking: dict) -> list[dict]:
    rows = file_rows(api, kb_name)
    if rows is None:
        return []
    st.subheader(t("files_in_kb", name=kb_name))
    if not rows:
        st.info(t("no_files"))
        return []
    st.dataframe(table_rows(rows), hide_index=True, width="stretch")
    names = [row["file_name"] for row in rows]
    select_key = f"file_select_{kb_name}"
    selected = st.multiselect(t("col_select"), names, key=select_key, placeholder=t("select_files_hint"))
    cols = st.columns(4)
    download_control(api, cols[0], kb_name, selected)
    options = {k: v for k, v in chunking.items() if k != "override"}
    # (button key and label, action, button type): the three actions on the selected files.
    actions = [("reingest", "reingest", "secondary"), ("remove_from_vs", "remove", "secondary"),
               ("delete_files", "delete", "primary")]  # fmt: skip
    for column, (key, action, kind) in zip(cols[1:], actions, strict=True):
        column.button(
            t(key),
            disabled=not selected,
            type=kind,
            key=key,
            width="stretch",
            on_click=_file_action,
            args=(action, api, kb_name, selected, select_key, options),
        )
    return rows


def download_control(api: ApiClient, column, kb_name: str, selected: list[str]) -> None:
    """Download and preview need exactly one file; the bytes come through the API client."""
    if len(selected) != 1:
        column.button(t("download"), disabled=True, key="download_disabled", width="stretch")
        return
    file_name = selected[0]
    result = api.download_kb_doc(kb_name, file_name)
    if not result.ok:
        column.error(result.msg)
        return
    column.download_button(
        t("download"), result.data, file_name=file_name.rsplit("/", 1)[-1], key="download", width="stretch"
    )
    column.link_button(t("preview"), api.download_url(kb_name, file_name, preview=True), width="stretch")


def _file_action(action: str, api: ApiClient, kb_name: str, names: list[str], select_key: str, options: dict) -> None:
    """Runs as a button callback, before the page is drawn, so the table shows the outcome."""
    if action == "reingest":
        result = api.update_kb_docs(kb_name, names, override_custom_docs=True, **options)
    else:
        result = api.delete_kb_docs(kb_name, names, delete_content=action == "delete")
    if report(result) and isinstance(result.data, dict):
        for name, why in (result.data.get("failed_files") or {}).items():
            flash("error", f"{name}: {why}")
    st.session_state[select_key] = []


# ---- chunks ---------------------------------------------------------------------------------


def chunks_section(api: ApiClient, kb_name: str, rows: list[dict]) -> None:
    in_store = [row["file_name"] for row in rows if row.get("in_db", True)]
    if not in_store:
        return
    st.divider()
    file_name = st.selectbox(t("chunk_view_file"), in_store, key=f"chunk_file_{kb_name}")
    result = api.search_kb_docs(kb_name, file_name=file_name)
    if not result.ok or not isinstance(result.data, list):
        st.error(t("api_error", msg=result.msg))
        return
    docs = result.data[:MAX_CHUNKS_SHOWN]
    st.caption(t("chunks_of", name=file_name) + f" {len(result.data)}")
    edits: dict[str, str] = {}
    deleted: set[str] = set()
    for index, doc in enumerate(docs):
        doc_id = doc.get("id") or doc.get("metadata", {}).get("id") or str(index)
        cols = st.columns([10, 1])
        edits[doc_id] = cols[0].text_area(
            f"{t('chunk_text')} {index + 1}", doc.get("page_content", ""), key=f"chunk_{kb_name}_{doc_id}", height=100
        )
        if cols[1].checkbox(t("chunk_delete"), key=f"chunk_del_{kb_name}_{doc_id}"):
            deleted.add(doc_id)
    if st.button(t("chunk_save"), key="chunk_save"):
        save_chunks(api, kb_name, file_name, docs, edits, deleted)
        st.rerun()


def save_chunks(api: ApiClient, kb_name: str, file_name: str, docs: list[dict], edits: dict, deleted: set) -> None:
    """Edits go by id; deleting chunks rewrites the file's chunks as custom docs without them."""
    by_id = {(d.get("id") or d.get("metadata", {}).get("id")): d for d in docs}
    if deleted:
        kept = [
            {"page_content": edits.get(doc_id, doc.get("page_content", "")), "metadata": _plain_metadata(doc)}
            for doc_id, doc in by_id.items()
            if doc_id not in deleted
        ]
        result = api.update_kb_docs(kb_name, [file_name], override_custom_docs=True, docs={file_name: kept})
        report(result, t("chunk_saved"))
        return
    changed = {
        doc_id: {"page_content": text, "metadata": _plain_metadata(by_id[doc_id])}
        for doc_id, text in edits.items()
        if doc_id in by_id and text != by_id[doc_id].get("page_content")
    }
    if changed:
        report(api.update_docs_by_id(kb_name, changed), t("chunk_saved"))


def _plain_metadata(doc: dict) -> dict:
    # The store's own bookkeeping keys are set again by the server.
    return {k: v for k, v in (doc.get("metadata") or {}).items() if k not in ("id",)}
