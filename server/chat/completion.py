"""``/other/completion``: plain text completion (``/v1/completions``), events are raw text tokens.

Chatchat 0.2.10 looked up a "completion" template its stock config did not have, so the
endpoint always failed; ours ships one (``{{ input }}``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from server.chat import common, llm
from server.chat.common import ChatError, LLMRequest

PROMPT_TYPE = "completion"
DEFAULT_MAX_TOKENS = 1024


class CompletionRequest(LLMRequest):
    query: str = Field(..., description="the text to continue")
    echo: bool = Field(False, description="repeat the prompt before the completion")
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, description="tokens to generate")


async def completion(body: CompletionRequest):
    try:
        common.require_query(body.query)
        prompt = common.render_prompt(common.prompt_template(PROMPT_TYPE, body.prompt_name), input=body.query)
        await common.require_model(body.model_name)
    except ChatError as exc:
        return exc.response()
    return common.event_stream(_events(body, prompt))


async def _events(body: CompletionRequest, prompt: str) -> AsyncIterator[str]:
    model = llm.completion_model(body.model_name, body.temperature, body.max_tokens, echo=body.echo)
    text = ""
    try:
        async for token in model.astream(prompt):
            if body.stream:
                yield token
            text += token
        if not body.stream:
            yield text
    except Exception as exc:
        yield common.llm_failure_message(body.model_name, exc)
