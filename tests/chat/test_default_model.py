"""Every chat mode end to end with the real default model (SmolLM2-135M) behind FastChat.

The model is tiny, so these tests check the plumbing (events, sources, storage, clean ends),
not the quality of its answers. Few tokens per answer keep them quick on a CPU.
"""

from __future__ import annotations

import httpx
import pytest

from tests.chat.conftest import KB_FILES, ZEPHYR_QUESTION, create_kb_with_files, post_events, query_db
from tests.helpers.api_server import start_api_server

pytestmark = pytest.mark.slow

KB_NAME = "default_model_kb"
FEW_TOKENS = 12


@pytest.fixture(scope="module")
def default_api(llm_stack, searxng, tmp_path_factory):
    env = {**llm_stack.env, "CHATCHAT_SEARXNG_URL": searxng.url}
    with start_api_server(tmp_path_factory.mktemp("default_model_api"), **env) as api:
        create_kb_with_files(api, KB_NAME, KB_FILES)
        yield api


def _no_errors(events: list[dict]) -> None:
    assert not [e for e in events if "code" in e], f"error events: {events}"


def test_llm_chat_streams_and_stores(default_api):
    events = post_events(f"{default_api.url}/chat/chat", {"query": "Say hello.", "stream": True, "max_tokens": 8})

    _no_errors(events)
    text = "".join(e["text"] for e in events)
    assert text.strip() and len({e["message_id"] for e in events}) == 1
    stored = query_db(default_api, "SELECT response FROM message WHERE id = ?", (events[0]["message_id"],))
    assert stored == [(text,)]


def test_kb_chat_answers_then_cites_the_right_file(default_api):
    events = post_events(
        f"{default_api.url}/chat/knowledge_base_chat",
        {
            "query": ZEPHYR_QUESTION,
            "knowledge_base_name": KB_NAME,
            "top_k": 1,
            "stream": True,
            "max_tokens": FEW_TOKENS,
            "prompt_name": "english",
        },
    )

    _no_errors(events)
    assert "".join(e["answer"] for e in events[:-1]).strip()
    [source] = events[-1]["docs"]
    assert source.startswith("出处 [1] [zephyr_project.md](") and "7391" in source


def test_file_chat(default_api):
    upload = httpx.post(
        f"{default_api.url}/knowledge_base/upload_temp_docs",
        files=[("files", ("ferry.txt", b"The island ferry departs every 40 minutes from pier 9.", "text/plain"))],
        timeout=120,
    ).json()

    events = post_events(
        f"{default_api.url}/chat/file_chat",
        {"query": "When does the ferry leave?", "knowledge_id": upload["data"]["id"], "max_tokens": FEW_TOKENS},
    )

    _no_errors(events)
    assert len(events) == 1 and events[0]["answer"].strip() and "pier 9" in events[0]["docs"][0]


def test_search_engine_chat(default_api, searxng):
    events = post_events(
        f"{default_api.url}/chat/search_engine_chat",
        {"query": "penguins in winter", "search_engine_name": "searxng", "stream": True, "max_tokens": FEW_TOKENS},
    )

    _no_errors(events)
    assert "".join(e.get("answer", "") for e in events).strip()
    assert events[-1]["docs"][0].startswith("出处 [1] [Emperor penguins](http://example.test/penguins)")


def test_agent_with_a_model_that_cannot_plan_ends_cleanly(default_api):
    events = post_events(
        f"{default_api.url}/chat/agent_chat", {"query": "What is 17 * 3?", "stream": True, "max_tokens": 24}
    )

    _no_errors(events)
    assert "final_answer" in events[-1] and isinstance(events[-1]["final_answer"], str)
    assert all(set(e) <= {"answer", "tools"} for e in events[:-1])


def test_completion(default_api):
    response = httpx.post(
        f"{default_api.url}/other/completion",
        json={"query": "Once upon a time", "stream": True, "max_tokens": 8},
        timeout=300,
    )

    assert response.status_code == 200
    text = "".join(block.removeprefix("data: ") for block in response.text.split("\r\n\r\n") if block)
    assert text.strip() and not text.startswith("调用大模型")
