"""What both pages share: the API client of this session, service health, readable results."""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from webui_pages.api_client import ApiClient, ApiResult
from webui_pages.i18n import t


def get_api() -> ApiClient:
    """One client per browser session, pointed at settings.API_SERVER (read at each run)."""
    from configs import get_settings

    url = get_settings().API_SERVER.url
    api = st.session_state.get("_api_client")
    if api is None or api.base_url != url:
        api = ApiClient(url)
        st.session_state["_api_client"] = api
    return api


@dataclass
class ServiceStatus:
    api_ok: bool
    api_msg: str
    llm_ok: bool
    llm_msg: str
    running_models: dict


HEALTH_RETRY_DELAYS = (0.3, 1.0)  # a dropped keep-alive connection fails once; a down server keeps failing


def check_services(api: ApiClient) -> ServiceStatus:
    """Ask the API server whether it and the LLM are up; never raises."""
    health = api.health()
    for delay in HEALTH_RETRY_DELAYS:
        if health.ok:
            break
        time.sleep(delay)
        health = api.health()
    if not health.ok:
        return ServiceStatus(False, health.msg, False, health.msg, {})
    models = api.list_running_models()
    running = models.data if models.ok and isinstance(models.data, dict) else {}
    if not models.ok:
        return ServiceStatus(True, "", False, models.msg, {})
    if not running:
        return ServiceStatus(True, "", False, t("no_running_models"), {})
    return ServiceStatus(True, "", True, "", running)


def show_status_banners(status: ServiceStatus) -> None:
    if not status.api_ok:
        # Material icons: emoji render as empty boxes on machines without an emoji font.
        st.error(t("api_down", msg=status.api_msg), icon=":material/cloud_off:")
    elif not status.llm_ok:
        st.warning(t("llm_down", msg=status.llm_msg), icon=":material/warning:")


def flash(kind: str, text: str) -> None:
    """Keep a message for the next run of the page (actions often end in st.rerun)."""
    st.session_state.setdefault("_flashes", []).append((kind, text))


def show_flashes() -> None:
    for kind, text in st.session_state.pop("_flashes", []):
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)


def report(result: ApiResult, success: str | None = None) -> bool:
    """Flash the outcome of an action: the server's message, or a readable error; returns ok."""
    if result.ok:
        flash("success", success or result.msg)
        return True
    flash("error", t("api_error", msg=result.msg))
    return False


def server_configs(api: ApiClient) -> dict:
    """/server/configs as a dict ({} when the server cannot say)."""
    result = api.get_server_configs()
    return result.data if result.ok and isinstance(result.data, dict) else {}
