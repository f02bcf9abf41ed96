"""Conversations of one browser session, mirrored from the server when it keeps them.

State lives in ``st.session_state``: ``conversations`` maps an id (32 hex chars, the
``conversation_id`` sent with every chat) to ``{"name", "messages", "loaded"}``.
A message is ``{"role", "content", "message_id", "docs", "docs_title", "steps", "error"}``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import streamlit as st

from webui_pages.api_client import ApiClient
from webui_pages.i18n import t


def new_message(role: str, content: str, **extra) -> dict:
    message = {"role": role, "content": content, "message_id": None, "docs": [], "docs_title": "", "steps": []}
    message["error"] = None
    message.update(extra)
    return message


def _state() -> dict:
    return st.session_state.setdefault("conversations", {})


def current_id() -> str:
    return st.session_state["conversation_id"]


def current() -> dict:
    return _state()[current_id()]


def all_conversations() -> dict:
    return _state()


def create(api: ApiClient, name: str | None = None) -> str:
    conversations = _state()
    conversation_id = uuid.uuid4().hex
    name = name or t("conversation_default_name", n=len(conversations) + 1)
    conversations[conversation_id] = {"name": name, "messages": [], "loaded": True}
    st.session_state["conversation_id"] = conversation_id
    # Register the name with the server (it creates the row); a server without the extension just says 404.
    api.rename_conversation(conversation_id, name)
    return conversation_id


def sync_from_server(api: ApiClient) -> None:
    """Once per session: list the conversations the server keeps, so a reload brings them back."""
    if st.session_state.get("_conversations_synced"):
        return
    st.session_state["_conversations_synced"] = True
    result = api.list_conversations()
    if result.ok and isinstance(result.data, list):
        for row in result.data:
            if row.get("id") and row["id"] not in _state():
                _state()[row["id"]] = {"name": row.get("name") or row["id"][:8], "messages": [], "loaded": False}
    if not _state():
        create(api)
    if st.session_state.get("conversation_id") not in _state():
        st.session_state["conversation_id"] = next(iter(_state()))


def ensure_loaded(api: ApiClient) -> str | None:
    """Fetch the current conversation's messages from the server the first time it is shown."""
    conversation = current()
    if conversation["loaded"]:
        return None
    result = api.get_conversation_messages(current_id())
    conversation["loaded"] = True
    if not result.ok:
        return t("history_from_server_failed", msg=result.msg)
    conversation["messages"] = messages_from_rows(result.data or [])
    return None


def messages_from_rows(rows: list[dict]) -> list[dict]:
    """Server rows (one per exchange: query and response) as chat messages."""
    messages = []
    for row in rows:
        meta = row.get("meta_data") or {}
        messages.append(new_message("user", row.get("query", "")))
        messages.append(
            new_message(
                "assistant",
                row.get("response", ""),
                message_id=row.get("id"),
                docs=list(meta.get("docs") or []),
                feedback=row.get("feedback_score", -1) if row.get("feedback_score", -1) >= 0 else None,
            )
        )
    return messages


def switch(conversation_id: str) -> None:
    st.session_state["conversation_id"] = conversation_id


def rename(api: ApiClient, conversation_id: str, name: str) -> None:
    _state()[conversation_id]["name"] = name
    api.rename_conversation(conversation_id, name)


def delete(api: ApiClient, conversation_id: str) -> None:
    api.delete_conversation(conversation_id)
    _state().pop(conversation_id, None)
    if not _state():
        create(api)
    elif current_id() not in _state():
        st.session_state["conversation_id"] = next(iter(_state()))


def clear(api: ApiClient) -> None:
    """Empty the current conversation: the server's copy goes, the name stays."""
    old_id = current_id()
    name = current()["name"]
    api.delete_conversation(old_id)
    _state().pop(old_id, None)
    create(api, name)


def history_for_request(messages: list[dict], history_len: int) -> list[dict]:
    """The last ``history_len`` answered exchanges, as the chat endpoints' ``history`` field wants them."""
    if history_len <= 0:
        return []
    exchanges = []
    for question, answer in zip(messages, messages[1:], strict=False):
        # A failed or empty answer is not sent back to the model, nor is the question it failed on.
        if question["role"] == "user" and answer["role"] == "assistant" and answer["content"] and not answer["error"]:
            exchanges.append(({"role": "user", "content": question["content"]}, answer))
    recent = exchanges[-history_len:]
    return [m for question, answer in recent for m in (question, {"role": "assistant", "content": answer["content"]})]


def to_markdown(name: str, messages: list[dict], now: datetime | None = None) -> str:
    """The conversation as a Markdown document (what "export" downloads)."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M")
    parts = [t("export_title", name=name, time=stamp)]
    for message in messages:
        who = t("role_user") if message["role"] == "user" else t("role_assistant")
        parts.append(f"## {who}\n\n{message['content'] or message.get('error') or ''}\n")
        if message.get("docs"):
            parts.append(f"### {message.get('docs_title') or t('sources')}\n")
            parts.extend(f"{doc}\n" for doc in message["docs"])
    return "\n".join(parts)
