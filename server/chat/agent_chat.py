"""``/chat/agent_chat``: a tool-using agent (LangChain chat model + LangChain tools).

Each turn the model either calls a tool or answers. Tool calls are read from the OpenAI
``tool_calls`` of models that support function calling, or from ReAct text
(``Action: ...`` / ``Action Input: ...``) for models that don't, which is what FastChat
serves; a server that rejects ``tools`` is retried without them. Text that is neither a
tool call nor a ``Final Answer:`` is taken as the final answer, so small models that cannot
plan still end cleanly.

Events (Chatchat 0.2.x): ``{"answer": token}`` for the model's text, ``{"tools": [lines]}``
after each tool call, ``{"final_answer": text}`` at the end; without streaming, one
``{"answer": text and tool blocks, "final_answer": text}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import openai
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from pydantic import Field

from configs import get_settings
from server.chat import common, llm
from server.chat.common import ChatError, History, LLMRequest
from server.chat.tools import build_tools

PROMPT_TYPE = "agent_chat"
STOP_WORDS = ["\nObservation:", "Observation:"]
ITERATION_LIMIT_ANSWER = "Agent stopped due to iteration limit."
MAX_OBSERVATION_CHARS = 4000

_ACTION = re.compile(r"Action\s*:\s*(?P<tool>[^\n]+?)\s*\n+\s*Action\s*Input\s*:\s*(?P<input>.*)", re.S | re.I)
_FINAL = re.compile(r"Final\s*Answer\s*:\s*(?P<answer>.*)", re.S | re.I)


class AgentChatRequest(LLMRequest):
    query: str = Field(..., description="the task or question")
    history: list[History] = Field([], description="past messages [{role, content}]")


# ---- what a run produces ---------------------------------------------------------------------------


@dataclass
class Token:
    text: str


@dataclass
class ToolStep:
    name: str
    tool_input: str
    output: str
    ok: bool

    def lines(self) -> list[str]:
        if self.ok:
            status = ["工具状态: 调用成功", f"工具输入: {self.tool_input}", f"工具输出: {self.output}"]
        else:
            status = ["工具状态: 调用失败", f"错误信息: {self.output}", "重新开始尝试"]
        return ["\n```\n", f"工具名称: {self.name}", *status, "\n```\n"]


@dataclass
class Final:
    text: str


@dataclass
class ToolCall:
    name: str
    args: dict | str
    call_id: str | None = None  # set for native (OpenAI) tool calls


# ---- endpoint ---------------------------------------------------------------------------------------------


async def agent_chat(body: AgentChatRequest):
    try:
        common.require_query(body.query)
        template = common.prompt_template(PROMPT_TYPE, body.prompt_name)
        await common.require_model(body.model_name)
    except ChatError as exc:
        return exc.response()
    tools = build_tools()
    steps = run_agent(body, template, tools)
    events = _stream_events(steps) if body.stream else _single_event(steps)
    return common.event_stream(common.guarded(events, lambda exc: common.llm_failure_message(body.model_name, exc)))


async def _stream_events(steps: AsyncIterator) -> AsyncIterator[str]:
    async for step in steps:
        if isinstance(step, Token):
            yield common.dumps({"answer": step.text})
        elif isinstance(step, ToolStep):
            yield common.dumps({"tools": step.lines()})
        else:
            yield common.dumps({"final_answer": step.text})


async def _single_event(steps: AsyncIterator) -> AsyncIterator[str]:
    answer, final = "", ""
    async for step in steps:
        if isinstance(step, Token):
            answer += step.text
        elif isinstance(step, ToolStep):
            answer += "\n".join(step.lines()) + "\n"
        else:
            final = step.text
    yield common.dumps({"answer": answer, "final_answer": final})


# ---- the loop -----------------------------------------------------------------------------------------------


async def run_agent(body: AgentChatRequest, template: str, tools: list[BaseTool]) -> AsyncIterator:
    by_name = {tool.name: tool for tool in tools}
    messages = _first_messages(template, body, tools)
    model = llm.chat_model(body.model_name, body.temperature, body.max_tokens)
    native = True  # try OpenAI function calling first; fall back to ReAct text if refused
    for _ in range(get_settings().AGENT_MAX_ITERATIONS):
        turn = _Turn()
        try:
            async for token in turn.run(model.bind_tools(tools) if native else model, messages):
                yield Token(token)
        except openai.BadRequestError:
            if not native or turn.text:
                raise
            native = False  # this server does not take "tools"
            async for token in turn.run(model, messages):
                yield Token(token)
        calls = turn.tool_calls() or _react_call(turn.text)
        if not calls:
            yield Final(_final_answer(turn.text))
            return
        messages.append(turn.as_message(calls))
        for call in calls:
            step = await _run_tool(by_name, call)
            yield step
            messages.append(_observation(call, step))
    yield Final(ITERATION_LIMIT_ANSWER)


def _first_messages(template: str, body: AgentChatRequest, tools: list[BaseTool]) -> list[BaseMessage]:
    descriptions = "\n".join(f"{t.name}: {t.description} Input: {json.dumps(_tool_args(t))}" for t in tools)
    uses_history = "history" in common.template_variables(template)
    prompt = common.render_prompt(
        template,
        input=body.query,
        tools=descriptions,
        tool_names=", ".join(t.name for t in tools),
        history=common.history_as_text(body.history) if uses_history else "",
        agent_scratchpad="",
    )
    return common.build_messages([] if uses_history else body.history, prompt)


def _tool_args(tool: BaseTool) -> dict:
    return {name: spec.get("description", spec.get("type", "")) for name, spec in tool.args.items()}


class _Turn:
    """One model reply, streamed: text before an ``Action:`` is passed on, the rest is kept back."""

    def __init__(self):
        self.text = ""
        self.message: AIMessageChunk | None = None
        self._sent = 0

    async def run(self, model, messages: list[BaseMessage]) -> AsyncIterator[str]:
        self.text, self.message, self._sent = "", None, 0
        async for chunk in model.astream(messages, stop=STOP_WORDS):
            self.message = chunk if self.message is None else self.message + chunk
            if isinstance(chunk.content, str) and chunk.content:
                self.text += chunk.content
                visible = self._visible(final=False)
                if visible:
                    yield visible
        visible = self._visible(final=True)
        if visible:
            yield visible

    def _visible(self, final: bool) -> str:
        marker = re.search(r"\n?\s*Action\s*:", self.text)
        end = marker.start() if marker else len(self.text) if final else max(0, len(self.text) - len("\nAction :"))
        piece = self.text[self._sent : max(end, self._sent)]
        self._sent = max(end, self._sent)
        return piece

    def tool_calls(self) -> list[ToolCall]:
        if self.message is None:
            return []
        return [
            ToolCall(c["name"], c.get("args") or {}, c.get("id") or uuid.uuid4().hex) for c in self.message.tool_calls
        ]

    def as_message(self, calls: list[ToolCall]) -> AIMessage:
        native = [{"name": c.name, "args": c.args, "id": c.call_id, "type": "tool_call"} for c in calls if c.call_id]
        return AIMessage(content=self.text, tool_calls=native)


def _react_call(text: str) -> list[ToolCall]:
    match = _ACTION.search(text)
    if match is None:
        return []
    final = _FINAL.search(text)
    if final and final.start() < match.start():
        return []
    name = match.group("tool").strip().strip("`'\"[]").strip()
    raw_input = re.split(r"\n\s*Observation\s*:", match.group("input"))[0].strip().strip("`").strip()
    try:
        args = json.loads(raw_input)
    except ValueError:
        args = raw_input
    return [ToolCall(name, args if isinstance(args, dict | str) else raw_input)]


def _final_answer(text: str) -> str:
    match = _FINAL.search(text)
    return (match.group("answer") if match else text).strip()


async def _run_tool(tools: dict[str, BaseTool], call: ToolCall) -> ToolStep:
    shown_input = call.args if isinstance(call.args, str) else json.dumps(call.args, ensure_ascii=False)
    tool = tools.get(call.name)
    if tool is None:
        return ToolStep(call.name, shown_input, f"unknown tool {call.name!r}; available: {', '.join(tools)}", False)
    try:
        output = await asyncio.to_thread(tool.invoke, _tool_input(tool, call.args))
    except Exception as exc:  # a failing tool is reported to the model, which may try again
        return ToolStep(call.name, shown_input, f"{type(exc).__name__}: {exc}", False)
    return ToolStep(call.name, shown_input, str(output)[:MAX_OBSERVATION_CHARS], True)


def _tool_input(tool: BaseTool, args: dict | str) -> dict:
    """Arguments as the tool names them. ReAct models often write just the value, or one value
    under a name of their own (``{"input": "2+3"}``): that goes to the tool's first argument."""
    first = next(iter(tool.args))
    if isinstance(args, str):
        return {first: args}
    if len(args) == 1 and not set(args) & set(tool.args):
        return {first: next(iter(args.values()))}
    return args


def _observation(call: ToolCall, step: ToolStep) -> BaseMessage:
    text = step.output if step.ok else f"Error: {step.output}"
    if call.call_id:
        return ToolMessage(content=text, tool_call_id=call.call_id)
    return HumanMessage(content=f"Observation: {text}")
