"""The dialogue page: five chat modes, their settings in the sidebar, several conversations."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from webui_pages.api_client import ApiClient
from webui_pages.common import ServiceStatus, server_configs, show_flashes
from webui_pages.dialogue import conversations as convs
from webui_pages.dialogue.replies import show_docs, show_steps, stream_into_page
from webui_pages.i18n import t

MODES = ["llm", "kb", "file", "search", "agent"]
# The prompt-template family each mode reads (/server/get_prompt_template's `type`).
PROMPT_TYPES = {
    "llm": "llm_chat",
    "kb": "knowledge_base_chat",
    "file": "knowledge_base_chat",
    "search": "search_engine_chat",
    "agent": "agent_chat",
}


@dataclass
class ChatOptions:
    """Everything the sidebar decided for the next question."""

    mode: str
    model: str | None
    temperature: float
    history_len: int
    prompt_name: str = "default"
    knowledge_base: str | None = None
    top_k: int = 3
    score_threshold: float = 1.0
    knowledge_id: str | None = None
    search_engine: str | None = None
    notes: list[str] = field(default_factory=list)


def dialogue_page(api: ApiClient, status: ServiceStatus) -> None:
    from configs import get_settings

    settings = get_settings()
    convs.sync_from_server(api)
    with st.sidebar:
        conversation_controls(api)
        options = chat_options(api, status, settings)
    show_flashes()
    history_error = convs.ensure_loaded(api)
    if history_error:
        st.warning(history_error)

    messages = convs.current()["messages"]
    query = st.chat_input(t("chat_input"), key="chat_input")  # drawn at the bottom wherever it is called
    if not messages and not query:
        show_greeting(options, status)
    for index, message in enumerate(messages):
        show_message(api, message, index)

    if query:
        ask(api, options, query)
    conversation_tools(api)


# ---- sidebar ------------------------------------------------------------------------------


def conversation_controls(api: ApiClient) -> None:
    conversations = convs.all_conversations()
    ids = list(conversations)
    st.selectbox(
        t("conversation"),
        ids,
        index=ids.index(convs.current_id()),
        format_func=lambda cid: conversations[cid]["name"],
        key=f"conversation_pick_{len(ids)}_{convs.current_id()}",
        on_change=_on_pick_conversation,
        args=(f"conversation_pick_{len(ids)}_{convs.current_id()}",),
    )
    cols = st.columns(2)
    cols[0].button(t("conversation_new"), on_click=convs.create, args=(api,), width="stretch", key="conversation_new")
    cols[1].button(
        t("conversation_delete"),
        on_click=lambda: convs.delete(api, convs.current_id()),
        width="stretch",
        key="conversation_delete",
    )
    with st.expander(t("conversation_rename")):
        # Keyed by conversation, so switching shows the current name rather than the last one typed.
        name = st.text_input(
            t("conversation_new_name"), value=convs.current()["name"], key=f"conversation_name_{convs.current_id()}"
        )
        if st.button(t("conversation_rename"), key="conversation_rename") and name.strip():
            convs.rename(api, convs.current_id(), name.strip())
            st.rerun()


def _on_pick_conversation(key: str) -> None:
    convs.switch(st.session_state[key])


def chat_options(api: ApiClient, status: ServiceStatus, settings) -> ChatOptions:
    # The mode's own settings come right after the mode, so they are in view without scrolling.
    mode = st.selectbox(t("dialogue_mode"), MODES, format_func=lambda m: t(f"mode_{m}"), key="dialogue_mode")
    options = ChatOptions(mode=mode, model=None, temperature=float(settings.TEMPERATURE), history_len=0)
    if mode == "kb":
        knowledge_base_settings(api, options, settings)
    elif mode == "file":
        file_chat_settings(api, options, settings)
    elif mode == "search":
        search_settings(api, options, settings)
    options.model = model_picker(api, status, settings)
    # Keyed by model: choosing another model starts the slider at that model's temperature.
    start = min(float(settings.temperature_for(options.model)), 1.0)
    options.temperature = st.slider(t("temperature"), 0.0, 1.0, start, 0.05, key=f"temperature_{options.model}")
    options.history_len = int(st.number_input(t("history_len"), 0, 20, int(settings.HISTORY_LEN)))
    options.prompt_name = prompt_picker(api, PROMPT_TYPES[mode])
    return options


def model_picker(api: ApiClient, status: ServiceStatus, settings) -> str | None:
    """Running models first (with their device), then configured ones the server can switch to."""
    running = status.running_models
    choices = list(running)
    configured = api.list_config_models()
    if configured.ok and isinstance(configured.data, dict):
        for models in configured.data.values():
            choices.extend(name for name in (models or {}) if name not in choices)
    for name in settings.LLM_MODELS:
        if name not in choices:
            choices.append(name)
    if not choices:
        return None

    def label(name: str) -> str:
        if name in running:
            device = (running[name] or {}).get("device") or "?"
            return t("model_running", name=name, device=device)
        return t("model_available", name=name)

    previous = st.session_state.get("llm_model_current")
    selected = st.selectbox(t("llm_model"), choices, format_func=label, key="llm_model")
    if previous and selected != previous and selected not in running and previous in running:
        with st.spinner(t("model_switching", name=selected)):
            result = api.change_llm_model(previous, selected)
        if not result.ok:
            st.error(t("model_switch_failed", msg=result.msg))
            return previous
    st.session_state["llm_model_current"] = selected
    return selected


def prompt_picker(api: ApiClient, prompt_type: str) -> str:
    templates = server_configs(api).get("PROMPT_TEMPLATES", {}).get(prompt_type) or {"default": ""}
    names = [name for name in templates if name not in ("empty", "with_history")] or ["default"]
    name = st.selectbox(t("prompt_template"), names, key=f"prompt_{prompt_type}")
    with st.expander(t("prompt_preview")):
        text = api.get_prompt_template(prompt_type, name)
        st.code(text.data if text.ok and isinstance(text.data, str) else templates.get(name, ""), language=None)
    return name


def knowledge_base_settings(api: ApiClient, options: ChatOptions, settings) -> None:
    result = api.list_knowledge_bases()
    names = result.data if result.ok and isinstance(result.data, list) else []
    if not result.ok:
        st.error(t("api_error", msg=result.msg))
    if not names:
        st.info(t("no_kb"))
    else:
        default = names.index(settings.DEFAULT_KNOWLEDGE_BASE) if settings.DEFAULT_KNOWLEDGE_BASE in names else 0
        options.knowledge_base = st.selectbox(t("kb_select"), names, index=default, key="chat_kb")
    options.top_k = int(st.number_input(t("top_k"), 1, 20, int(settings.VECTOR_SEARCH_TOP_K), key="chat_top_k"))
    options.score_threshold = st.slider(
        t("score_threshold"), 0.0, 1.0, min(float(settings.SCORE_THRESHOLD), 1.0), 0.01, key="chat_threshold"
    )


def file_chat_settings(api: ApiClient, options: ChatOptions, settings) -> None:
    files = st.file_uploader(t("file_upload"), accept_multiple_files=True, key="file_chat_files")
    options.top_k = int(st.number_input(t("top_k"), 1, 20, int(settings.VECTOR_SEARCH_TOP_K), key="file_top_k"))
    options.score_threshold = st.slider(
        t("score_threshold"), 0.0, 1.0, min(float(settings.SCORE_THRESHOLD), 1.0), 0.01, key="file_threshold"
    )
    if st.button(t("file_upload_button"), disabled=not files, key="file_chat_upload"):
        uploads = [(f.name, f.getvalue()) for f in files]
        result = api.upload_temp_docs(uploads, prev_id=st.session_state.get("file_chat_id"))
        if result.ok and isinstance(result.data, dict):
            st.session_state["file_chat_id"] = result.data.get("id")
            failed = [msg for item in result.data.get("failed_files", []) for msg in _failure_texts(item)]
            for message in failed:
                st.warning(message)
        else:
            st.error(t("api_error", msg=result.msg))
    options.knowledge_id = st.session_state.get("file_chat_id")
    if options.knowledge_id:
        st.caption(t("file_uploaded", id=options.knowledge_id))


def _failure_texts(item) -> list[str]:
    # upload_temp_docs reports failures as a list of one-key dicts (upload_docs uses a dict).
    if isinstance(item, dict):
        return [f"{name}: {msg}" for name, msg in item.items()]
    return [str(item)]


def search_settings(api: ApiClient, options: ChatOptions, settings) -> None:
    result = api.list_search_engines()
    engines = result.data if result.ok and isinstance(result.data, list) and result.data else []
    if not result.ok:
        st.error(t("api_error", msg=result.msg))
    if engines:
        default = engines.index(settings.DEFAULT_SEARCH_ENGINE) if settings.DEFAULT_SEARCH_ENGINE in engines else 0
        options.search_engine = st.selectbox(t("search_engine"), engines, index=default, key="search_engine")
    options.top_k = int(st.number_input(t("top_k"), 1, 20, int(settings.SEARCH_ENGINE_TOP_K), key="search_top_k"))


# ---- the conversation ------------------------------------------------------------------------


def show_greeting(options: ChatOptions, status: ServiceStatus) -> None:
    """What an empty conversation shows: which model answers, in which mode, from what."""
    model = options.model or t("greeting_no_model")
    if options.model and options.model not in status.running_models:
        model = t("greeting_model_not_running", name=options.model)
    lines = [t("greeting", model=model, mode=t(f"mode_{options.mode}"))]
    if options.mode == "kb":
        lines.append(t("greeting_kb", kb=options.knowledge_base) if options.knowledge_base else t("no_kb"))
    elif options.mode == "file":
        lines.append(t("greeting_file"))
    elif options.mode == "search" and options.search_engine:
        lines.append(t("greeting_search", engine=options.search_engine))
    with st.chat_message("assistant"):
        st.markdown("\n\n".join(lines))


def show_message(api: ApiClient, message: dict, index: int) -> None:
    with st.chat_message(message["role"]):
        show_steps(message.get("steps") or [], "")
        if message.get("error"):
            st.error(t("api_error", msg=message["error"]))
        else:
            st.markdown(message["content"] or t("empty_answer"))
        show_docs(message.get("docs") or [], message.get("docs_title") or t("sources"))
        if message["role"] == "assistant" and message.get("message_id"):
            feedback_form(api, message, index)


def feedback_form(api: ApiClient, message: dict, index: int) -> None:
    """Thumbs up or down with an optional reason, stored against the message by /chat/feedback."""
    with st.expander(t("feedback")):
        key = f"feedback_{message['message_id']}"
        score = st.radio(t("feedback_score"), [100, 0], format_func=_score_label, horizontal=True, key=f"{key}_score")
        reason = st.text_input(t("feedback_reason"), key=f"{key}_reason")
        if st.button(t("feedback_submit"), key=f"{key}_send"):
            result = api.chat_feedback(message["message_id"], int(score), reason)
            if result.ok:
                message["feedback"] = int(score)
                st.success(t("feedback_sent"))
            else:
                st.error(t("api_error", msg=result.msg))


def _score_label(score: int) -> str:
    return t("feedback_good") if score == 100 else t("feedback_bad")


def ask(api: ApiClient, options: ChatOptions, query: str) -> None:
    """Send the question in the chosen mode and stream the answer into the page."""
    conversation = convs.current()
    history = convs.history_for_request(conversation["messages"], options.history_len)
    with st.chat_message("user"):
        st.markdown(query)
    conversation["messages"].append(convs.new_message("user", query))
    with st.chat_message("assistant"):
        events, docs_title = start_stream(api, options, query, history)
        reply = stream_into_page(events, agent=options.mode == "agent", docs_title=docs_title)
    conversation["messages"].append(
        convs.new_message(
            "assistant",
            reply.answer,
            message_id=reply.message_id,
            docs=reply.docs,
            docs_title=docs_title,
            steps=reply.steps,
            error=reply.error,
        )
    )
    st.rerun()  # redraw from state, so the new answer gets its feedback box


def start_stream(api: ApiClient, options: ChatOptions, query: str, history: list[dict]):
    """The event stream for this mode, and the title its sources are shown under."""
    common = {
        "history": history,
        "model": options.model,
        "temperature": options.temperature,
        "prompt_name": options.prompt_name,
        "conversation_id": convs.current_id(),
    }
    if options.mode == "kb":
        if not options.knowledge_base:
            return iter([{"code": 404, "msg": t("no_kb")}]), t("sources")
        return api.knowledge_base_chat(
            query, options.knowledge_base, options.top_k, options.score_threshold, **common
        ), t("sources")
    if options.mode == "file":
        if not options.knowledge_id:
            return iter([{"code": 404, "msg": t("file_chat_need_upload")}]), t("sources")
        return api.file_chat(query, options.knowledge_id, options.top_k, options.score_threshold, **common), t(
            "sources"
        )
    if options.mode == "search":
        return api.search_engine_chat(query, options.search_engine or "", options.top_k, **common), t("web_sources")
    if options.mode == "agent":
        return api.agent_chat(query, **common), t("sources")
    common.pop("conversation_id")
    # LLM chat: the history goes with the request; the server also stores it under the conversation.
    return api.chat_chat(query, conversation_id=convs.current_id(), **common), t("sources")


def conversation_tools(api: ApiClient) -> None:
    conversation = convs.current()
    with st.sidebar:
        st.divider()
        cols = st.columns(2)
        cols[0].button(t("clear"), on_click=convs.clear, args=(api,), width="stretch", key="clear")
        cols[1].download_button(
            t("export"),
            convs.to_markdown(conversation["name"], conversation["messages"]),
            file_name=f"{conversation['name']}.md",
            mime="text/markdown",
            width="stretch",
            key="export",
        )
