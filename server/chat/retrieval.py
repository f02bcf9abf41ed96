"""Answer from retrieved text, then cite it: shared by knowledge-base, file and search-engine chat.

Events (Chatchat 0.2.x): ``{"answer": token}`` per token then ``{"docs": [...]}`` when
streaming; one ``{"answer": full, "docs": [...]}`` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from configs import get_settings
from server import signed_links
from server.chat import common, llm, tag_filter
from server.chat.common import History, LLMRequest

logger = logging.getLogger(__name__)

# Shown instead of sources when nothing matched (Chatchat's exact text, its UI colours it).
NO_DOCS_FOUND = "<span style='color:red'>未找到相关文档,该回答为大模型自身能力解答！</span>"


@dataclass(frozen=True)
class Exchange:
    """What is stored for an answer: the mode and the user's question (not the filled prompt)."""

    chat_type: str
    query: str


@dataclass(frozen=True)
class Source:
    title: str
    text: str
    link: str | None = None


def format_sources(sources: list[Source]) -> list[str]:
    """``出处 [n] [title](link) \\n\\n{text}\\n\\n``, numbered from 1; no link part when there is none."""
    formatted = []
    for number, source in enumerate(sources, start=1):
        target = f"({source.link})" if source.link else ""
        formatted.append(f"出处 [{number}] [{source.title}]{target} \n\n{source.text}\n\n")
    return formatted or [NO_DOCS_FOUND]


def download_link(base_url: str, kb_name: str, file_name: str) -> str:
    """A link to the source file; signed when the API needs keys, since a browser will open it."""
    keys = get_settings().API_KEYS
    return signed_links.download_url(base_url, kb_name, file_name, keys[0] if keys else None)


def build_prompt(template: str, query: str, context: str) -> str:
    # Chatchat's templates call the question "question"; ours also accept "input".
    return common.render_prompt(template, context=context, question=query, input=query)


async def answer_events(
    body: LLMRequest,
    exchange: Exchange,
    history: list[History],
    prompt: str,
    docs: list[str],
    return_direct: bool = False,
    template: str = "",
) -> AsyncIterator[str]:
    """Stream the answer, then the sources. Events also carry ``message_id`` (an addition to
    Chatchat's format, which clients ignore) so that /chat/feedback can score any mode's answer.
    ``template`` is the one ``prompt`` was filled from: its tags are removed from the answer."""
    if return_direct:
        yield common.dumps({"docs": docs} if body.stream else {"answer": "", "docs": docs})
        return
    meta = {"model_name": body.model_name, "prompt_name": body.prompt_name, "docs": docs}
    message_id = await asyncio.to_thread(
        common.start_exchange, body.conversation_id, exchange.chat_type, exchange.query, meta
    )
    model = llm.chat_model(body.model_name, body.temperature, body.max_tokens)
    messages = common.build_messages(history, prompt)
    answer = ""
    started = time.perf_counter()
    first_token_at = None
    try:
        tokens = tag_filter.strip_tags(common.stream_tokens(model, messages), tag_filter.template_tags(template))
        async for token in tokens:
            first_token_at = first_token_at or time.perf_counter()
            answer += token
            if body.stream:
                yield common.dumps({"answer": token, "message_id": message_id})
    except Exception as exc:
        yield common.error_event(common.llm_failure_message(body.model_name, exc))
        return
    finally:
        common.finish_exchange(message_id, answer)  # also when the client went away mid-answer
    logger.info(
        "answered with %s: first token %.2fs, total %.2fs",
        body.model_name,
        (first_token_at or time.perf_counter()) - started,
        time.perf_counter() - started,
    )
    final = {"docs": docs} if body.stream else {"answer": answer, "docs": docs}
    yield common.dumps({**final, "message_id": message_id})
