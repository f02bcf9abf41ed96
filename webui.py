"""The web UI (:8501): ``python -m streamlit run webui.py --server.port 8501 --server.headless true``.

It talks only to the API server (settings.API_SERVER) through ``webui_pages.api_client``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `streamlit run` does not put the repo on the path

from configs import VERSION  # noqa: E402
from webui_pages.common import check_services, get_api, show_status_banners  # noqa: E402
from webui_pages.dialogue import dialogue_page  # noqa: E402
from webui_pages.i18n import t  # noqa: E402
from webui_pages.knowledge_base import knowledge_base_page  # noqa: E402

logger = logging.getLogger("webui")
PAGES = {"dialogue": dialogue_page, "knowledge_base": knowledge_base_page}


def main() -> None:
    st.set_page_config(page_title=t("app_title"), page_icon=":material/forum:", layout="wide")
    api = get_api()
    with st.sidebar:
        st.title(t("app_title"))
        page = st.radio(
            "page", list(PAGES), format_func=lambda p: t(f"nav_{p}"), key="page", label_visibility="collapsed"
        )
        st.caption(t("version", version=VERSION))
    status = check_services(api)
    show_status_banners(status)
    if not status.api_ok:
        return
    try:
        PAGES[page](api, status)
    except Exception as exc:  # an answer the page did not expect: say so in words, keep the traceback in the log
        logger.exception("page %s failed", page)
        st.error(t("page_failed", error=f"{type(exc).__name__}: {exc}"))


main()
