"""Turn a chat stream into an answer on the page, token by token, with its sources and steps."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import streamlit as st

from webui_pages.api_client import is_error_event
from webui_pages.i18n import t

# A source's download link, as knowledge_base_chat writes it: [file](http://.../download_doc?...)
_DOWNLOAD_LINK = re.compile(r"\]\((https?://[^)\s]*/knowledge_base/download_doc\?[^)\s]*)\)")


@dataclass
class Reply:
    text: str = ""
    thinking: str = ""  # agent tokens before the final answer
    final_answer: str | None = None
    message_id: str | None = None
    docs: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def answer(self) -> str:
        # An agent that never reached a final answer still shows what it said.
        return self.final_answer if self.final_answer is not None else (self.text or self.thinking)


def apply_event(reply: Reply, event: dict, agent: bool = False) -> str:
    """Fold one stream event into ``reply``; returns what it carried ("text", "docs", "step", "error", "")."""
    if is_error_event(event):
        reply.error = str(event["msg"])
        return "error"
    kind = ""
    if event.get("message_id"):
        reply.message_id = str(event["message_id"])
    token = event.get("text", event.get("answer"))
    if isinstance(token, str):
        if agent:
            reply.thinking += token
        else:
            reply.text += token
        kind = "text"
    if isinstance(event.get("docs"), list):
        reply.docs = [str(doc) for doc in event["docs"]]
        kind = "docs"
    if isinstance(event.get("tools"), list):
        reply.steps.append("\n".join(str(line) for line in event["tools"]))
        kind = "step"
    if isinstance(event.get("final_answer"), str):
        reply.final_answer = event["final_answer"]
        kind = "text"
    return kind


def with_preview_links(doc: str) -> str:
    """Add a "preview" link next to a source's download link (download_doc with preview=true)."""
    match = _DOWNLOAD_LINK.search(doc)
    if not match:
        return doc
    preview = f" [{t('preview')}]({match.group(1)}&preview=true)"
    return doc[: match.end()] + preview + doc[match.end() :]


def show_docs(docs: list[str], title: str) -> None:
    if not docs:
        return
    with st.expander(title, expanded=False):
        for doc in docs:
            st.markdown(with_preview_links(doc), unsafe_allow_html=True)


def steps_markdown(steps: list[str], thinking: str) -> str:
    """The agent's reasoning and each tool call (name, input, output) as Markdown."""
    blocks = [thinking.strip()] if thinking.strip() else []
    blocks.extend(f"```\n{step}\n```" for step in steps)
    return "\n\n".join(blocks)


def show_steps(steps: list[str], thinking: str) -> None:
    if steps or thinking:
        with st.expander(t("agent_steps"), expanded=False):
            st.markdown(steps_markdown(steps, thinking))


def stream_into_page(events: Iterable[dict], agent: bool, docs_title: str) -> Reply:
    """Render the answer as it arrives; agent steps go into a live status box."""
    reply = Reply()
    status = st.status(t("agent_step_running"), expanded=True) if agent else None
    steps_slot = status.empty() if status is not None else None
    answer_slot = st.empty()
    answer_slot.markdown(t("thinking"))
    for event in events:
        kind = apply_event(reply, event, agent=agent)
        if kind == "error":
            break
        if steps_slot is not None and kind in ("step", "text"):
            steps_slot.markdown(steps_markdown(reply.steps, reply.thinking))
        shown = reply.final_answer if agent else reply.text
        if shown:
            answer_slot.markdown(shown + " ▌")
    if status is not None:
        status.update(label=t("agent_steps"), state="error" if reply.error else "complete", expanded=False)
    if reply.error:
        answer_slot.error(t("api_error", msg=reply.error))
    else:
        answer_slot.markdown(reply.answer or t("empty_answer"))
    show_docs(reply.docs, docs_title)
    return reply
