"""Stored conversations: list, reload, rename and delete what /chat/chat recorded."""

from __future__ import annotations

import uuid

import httpx

from tests.chat.conftest import post_events


def test_a_conversation_is_listed_reloaded_renamed_and_deleted(chat_api, llm):
    conversation_id = uuid.uuid4().hex
    for question in ("first question", "second question"):
        post_events(f"{chat_api.url}/chat/chat", {"query": question, "conversation_id": conversation_id})

    with httpx.Client(base_url=chat_api.url, timeout=60) as client:
        listed = client.get("/chat/conversations").json()["data"]
        assert conversation_id in [c["id"] for c in listed]

        messages = client.get("/chat/conversations/messages", params={"conversation_id": conversation_id}).json()
        assert [m["query"] for m in messages["data"]] == ["first question", "second question"]
        assert messages["data"][0]["response"] == "Echo: first question"

        renamed = client.post(
            "/chat/conversations/rename", json={"conversation_id": conversation_id, "name": "Launch planning"}
        ).json()
        assert renamed["code"] == 200
        names = {c["id"]: c["name"] for c in client.get("/chat/conversations").json()["data"]}
        assert names[conversation_id] == "Launch planning"

        assert (
            client.post("/chat/conversations/delete", json={"conversation_id": conversation_id}).json()["code"] == 200
        )
        gone = client.get("/chat/conversations/messages", params={"conversation_id": conversation_id}).json()
        assert gone["data"] == []
        again = client.post("/chat/conversations/delete", json={"conversation_id": conversation_id}).json()
        assert again["code"] == 404


def test_conversation_routes_validate_their_fields(chat_api):
    with httpx.Client(base_url=chat_api.url, timeout=60) as client:
        too_long = client.post("/chat/conversations/rename", json={"conversation_id": "x" * 33, "name": "n"})
        assert too_long.status_code == 422 and "conversation_id" in too_long.text
        missing = client.get("/chat/conversations/messages")
        assert missing.status_code == 422
