"""/chat/agent_chat against the scripted OpenAI-protocol model: tool calls (native and ReAct
text), the calculator's result travelling back to the model and into the final answer."""

from __future__ import annotations

import pytest

from tests.chat.conftest import KB_NAME, post_envelope, post_events, scripted_env
from tests.helpers.api_server import start_api_server


def _tool_events(events: list[dict]) -> list[list[str]]:
    return [e["tools"] for e in events if "tools" in e]


@pytest.mark.parametrize("stream", [True, False])
def test_native_tool_call_runs_the_calculator_and_its_result_reaches_the_final_answer(chat_api, llm, stream):
    llm.set_script(
        [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "(17 + 25) * 3"}}]},
            {"content_from_tool": "Final Answer: the result is {}."},
        ]
    )

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "what is (17+25)*3?", "stream": stream})

    requests = llm.chat_requests()
    assert "calculator" in {t["function"]["name"] for t in requests[0]["tools"]}
    tool_message = requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "126"
    if stream:
        [tool_lines] = _tool_events(events)
        assert "工具名称: calculator" in tool_lines and "工具状态: 调用成功" in tool_lines
        assert "工具输出: 126" in tool_lines
        assert events[-1] == {"final_answer": "the result is 126."}
    else:
        assert len(events) == 1
        assert "工具输出: 126" in events[0]["answer"]
        assert events[0]["final_answer"] == "the result is 126."


def test_react_text_agent_works_with_a_server_that_refuses_tools(chat_api, llm):
    llm.reject_tools = True
    llm.set_script(
        [
            {"content": 'Thought: I should compute.\nAction: calculator\nAction Input: {"input": "2**10 - 24"}'},
            {"content_from_tool": "Thought: done.\nFinal Answer: {}"},
        ]
    )

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "2^10-24?", "stream": True})

    streamed_text = "".join(e.get("answer", "") for e in events)
    assert "Thought: I should compute." in streamed_text and "Action:" not in streamed_text.split("Final")[0]
    assert "工具输出: 1000" in _tool_events(events)[0]
    assert events[-1] == {"final_answer": "1000"}
    accepted = [r for r in llm.chat_requests() if not r.get("tools")]
    assert accepted[-1]["messages"][-1] == {"role": "user", "content": "Observation: 1000"}
    assert "calculator" in accepted[0]["messages"][-1]["content"], "the prompt lists the tools"


def test_calculator_refuses_code_and_the_agent_reports_the_failure(chat_api, llm):
    llm.set_script(
        [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "__import__('os').system('id')"}}]},
            {"content_from_tool": "Final Answer: tool said {}"},
        ]
    )

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "run it", "stream": True})

    [tool_lines] = _tool_events(events)
    assert "工具状态: 调用失败" in tool_lines
    assert events[-1]["final_answer"].startswith("tool said Error: CalculatorError")


def test_shell_tool_is_off_by_default(chat_api, llm):
    llm.set_script(
        [
            {"tool_calls": [{"name": "shell", "arguments": {"command": "echo pwned"}}]},
            {"content_from_tool": "Final Answer: {}"},
        ]
    )

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "run echo", "stream": True})

    assert "shell" not in {t["function"]["name"] for t in llm.chat_requests()[0]["tools"]}
    assert "工具状态: 调用失败" in _tool_events(events)[0]
    assert "pwned" not in events[-1]["final_answer"].replace("'shell'", "")
    assert "unknown tool 'shell'" in events[-1]["final_answer"]


def test_knowledge_base_tool_searches_the_named_kb(chat_api, llm):
    llm.set_script(
        [
            {
                "tool_calls": [
                    {
                        "name": "search_knowledge_base",
                        "arguments": {"query": "Zephyr launch code", "knowledge_base_name": KB_NAME},
                    }
                ]
            },
            {"content_from_tool": "Final Answer: {}"},
        ]
    )

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "Zephyr code?", "stream": True})

    assert "[zephyr_project.md]" in events[-1]["final_answer"] and "7391" in events[-1]["final_answer"]


def test_a_model_that_never_calls_tools_ends_with_its_text_as_the_final_answer(chat_api, llm):
    llm.set_script([{"content": "Hello there, nice to meet you."}])

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "just say hi", "stream": True})

    assert "".join(e.get("answer", "") for e in events) == "Hello there, nice to meet you."
    assert events[-1] == {"final_answer": "Hello there, nice to meet you."}
    assert len(llm.chat_requests()) == 1


def test_agent_stops_after_the_iteration_limit(chat_api, llm):
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    llm.set_script([call] * 10)

    events = post_events(f"{chat_api.url}/chat/agent_chat", {"query": "loop forever", "stream": True})

    assert len(_tool_events(events)) == 5  # AGENT_MAX_ITERATIONS
    assert events[-1] == {"final_answer": "Agent stopped due to iteration limit."}


def test_agent_bad_input(chat_api, llm):
    url = f"{chat_api.url}/chat/agent_chat"
    assert post_envelope(url, {"query": "", "stream": True})["code"] == 400
    assert post_envelope(url, {"query": "x", "model_name": "nope"})["code"] == 404
    assert post_envelope(url, {"query": "x", "prompt_name": "nope"})["code"] == 404
    assert llm.chat_requests() == []


def test_shell_tool_runs_only_when_enabled_in_settings(tmp_path, llm):
    llm.set_script(
        [
            {"tool_calls": [{"name": "shell", "arguments": {"command": "echo shell-ran-$((6*7))"}}]},
            {"content_from_tool": "Final Answer: {}"},
        ]
    )
    with start_api_server(tmp_path, **scripted_env(llm, CHATCHAT_AGENT_SHELL_ENABLED="true")) as api:
        events = post_events(f"{api.url}/chat/agent_chat", {"query": "run echo", "stream": True})

    assert "shell" in {t["function"]["name"] for t in llm.chat_requests()[0]["tools"]}
    assert "工具输出: exit code 0\nshell-ran-42" in _tool_events(events)[0]
    assert events[-1] == {"final_answer": "exit code 0\nshell-ran-42"}
