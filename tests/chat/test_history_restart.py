"""A conversation's history lives in the database: it survives an API server restart."""

from __future__ import annotations

from tests.chat.conftest import post_events, scripted_env
from tests.helpers.api_server import start_api_server


def test_history_is_read_back_after_a_restart(tmp_path, llm):
    env = scripted_env(llm)
    conversation = "restart0conversation0000000001"
    with start_api_server(tmp_path, **env) as api:
        for query in ("remember the number 4242", "and the colour teal"):
            post_events(f"{api.url}/chat/chat", {"query": query, "conversation_id": conversation, "stream": True})

    with start_api_server(tmp_path, **env) as api:
        events = post_events(
            f"{api.url}/chat/chat",
            {"query": "what did I ask you to remember?", "conversation_id": conversation, "history_len": 10},
        )

    assert events[0]["text"] == "Echo: what did I ask you to remember?"
    assert [(m["role"], m["content"]) for m in llm.chat_requests()[-1]["messages"]] == [
        ("user", "remember the number 4242"),
        ("assistant", "Echo: remember the number 4242"),
        ("user", "and the colour teal"),
        ("assistant", "Echo: and the colour teal"),
        ("user", "what did I ask you to remember?"),
    ]
