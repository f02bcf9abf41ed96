"""The MCP server, started by ``startup.py --mcp``, through the official SDK's client over streamable HTTP.

Behind it: the real API server (with an API key) answering from a test knowledge base, and the
scripted OpenAI-protocol model answering knowledge-base chat.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.chat.conftest import KB_FILES, SCRIPTED_MODEL, ZEPHYR_QUESTION, create_kb_with_files, echo_of, scripted_env
from tests.chat.servers.openai_scripted import scripted_openai
from tests.helpers.api_server import start_api_server
from tests.helpers.processes import child_env, free_port, running_process

KEY = "mcp-key"
KB = "mcp_kb"


@pytest.fixture(scope="module")
def mcp_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    with scripted_openai([SCRIPTED_MODEL]) as llm:
        keys = {"CHATCHAT_API_KEYS": json.dumps([KEY])}
        with start_api_server(root / "api", **scripted_env(llm, **keys)) as api:
            create_kb_with_files(api, KB, KB_FILES, headers={"Authorization": f"Bearer {KEY}"})
            port = free_port()
            env = child_env(
                root / "mcp",
                **keys,
                CHATCHAT_API_SERVER__PORT=str(api.port),
                CHATCHAT_MCP_SERVER__PORT=str(port),
            )
            url = f"http://127.0.0.1:{port}"
            with running_process(
                ["startup.py", "--mcp"], env=env, log_path=root / "startup.log", health_url=url + "/health"
            ):
                yield {"url": url, "llm": llm}


def _run(coro):
    return asyncio.run(coro)


async def _with_client(url: str, key: str, use):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
        return await use(client)


def _structured(result) -> object:
    assert not result.is_error, result.content
    data = result.structured_content
    return data["result"] if isinstance(data, dict) and set(data) == {"result"} else data


def test_tools_are_listed_with_their_parameters(mcp_stack):
    tools = _run(_with_client(mcp_stack["url"], KEY, lambda c: c.list_tools())).tools
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == {"list_knowledge_bases", "search_docs", "knowledge_base_chat"}
    assert by_name["search_docs"].input_schema["required"] == ["query", "knowledge_base_name"]
    assert by_name["knowledge_base_chat"].description


def test_list_and_search_find_the_right_file(mcp_stack):
    async def use(client):
        kbs = await client.call_tool("list_knowledge_bases", {})
        hits = await client.call_tool("search_docs", {"query": ZEPHYR_QUESTION, "knowledge_base_name": KB, "top_k": 2})
        return kbs, hits

    kbs, hits = _run(_with_client(mcp_stack["url"], KEY, use))
    listed = {kb["name"]: kb for kb in _structured(kbs)}
    assert listed[KB]["files"] == len(KB_FILES)
    found = _structured(hits)
    assert len(found) == 2
    assert found[0]["source"] == "zephyr_project.md" and "7391" in found[0]["text"]


def test_knowledge_base_chat_answers_with_sources(mcp_stack):
    mcp_stack["llm"].reset()
    result = _run(
        _with_client(
            mcp_stack["url"],
            KEY,
            lambda c: c.call_tool("knowledge_base_chat", {"query": ZEPHYR_QUESTION, "knowledge_base_name": KB}),
        )
    )
    answer = _structured(result)
    prompt = mcp_stack["llm"].chat_requests()[-1]["messages"][-1]["content"]
    assert "launch code is 7391" in prompt
    assert answer["answer"] == echo_of(prompt)
    assert answer["sources"][0]["index"] == 1 and answer["sources"][0]["title"] == "zephyr_project.md"


def test_an_unknown_knowledge_base_is_a_tool_error_naming_the_known_ones(mcp_stack):
    result = _run(
        _with_client(
            mcp_stack["url"], KEY, lambda c: c.call_tool("search_docs", {"query": "x", "knowledge_base_name": "nope"})
        )
    )
    assert result.is_error
    assert "no knowledge base named 'nope'" in result.content[0].text and KB in result.content[0].text


def test_the_api_key_is_required(mcp_stack):
    assert httpx.get(mcp_stack["url"] + "/health").status_code == 200
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    refused = httpx.post(mcp_stack["url"] + "/mcp", json=init)
    assert refused.status_code == 401 and "API key" in refused.text
    # The SDK's client gives up (inside its task group) on the 401.
    with pytest.raises(Exception, match="TaskGroup") as refused_client:
        _run(_with_client(mcp_stack["url"], "wrong-key", lambda c: c.list_tools()))
    assert "MCPError" in repr(refused_client.value.exceptions)


@pytest.mark.parametrize("enabled", [True, False])
def test_all_api_starts_the_mcp_server_only_when_mcp_enabled(enabled):
    import startup
    from configs.settings import Settings

    args = startup.selection(startup.build_parser().parse_args(["--all-api"]))
    stages, _ = startup.plan_services(args, Settings(MCP_ENABLED=enabled))
    names = [service.name for stage in stages for service in stage]
    assert ("mcp" in names) is enabled
    if enabled:
        assert names.index("mcp") > names.index("api")  # its tools call the API server
