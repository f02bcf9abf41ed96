"""/chat/chat and /chat/feedback over HTTP, against the scripted model (it echoes the prompt)."""

from __future__ import annotations

import json
import time
import uuid

import httpx

from tests.chat.conftest import SCRIPTED_MODEL, post_envelope, post_events, query_db


def _user_and_assistant_turns(request: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"]]


def test_streamed_chat_sends_tokens_with_one_message_id_and_stores_the_exchange(chat_api, llm):
    events = post_events(f"{chat_api.url}/chat/chat", {"query": "hello streaming world", "stream": True})

    assert len(events) > 1, "a streamed answer comes token by token"
    assert {e["message_id"] for e in events} == {events[0]["message_id"]}
    answer = "".join(e["text"] for e in events)
    assert answer == "Echo: hello streaming world"
    rows = query_db(chat_api, "SELECT chat_type, query, response FROM message WHERE id = ?", (events[0]["message_id"],))
    assert rows == [("llm_chat", "hello streaming world", answer)]


def test_non_streamed_chat_is_one_event_with_the_whole_answer(chat_api, llm):
    events = post_events(f"{chat_api.url}/chat/chat", {"query": "just once", "stream": False})

    assert len(events) == 1
    assert events[0]["text"] == "Echo: just once"
    assert len(events[0]["message_id"]) == 32


def test_request_options_reach_the_model(chat_api, llm):
    post_events(
        f"{chat_api.url}/chat/chat",
        {"query": "q", "model_name": SCRIPTED_MODEL, "temperature": 0.2, "max_tokens": 17, "prompt_name": "py"},
    )
    sent = llm.chat_requests()[-1]
    assert sent["model"] == SCRIPTED_MODEL
    assert sent["temperature"] == 0.2
    assert sent["max_tokens"] == 17  # FastChat reads max_tokens, not max_completion_tokens
    assert sent["messages"][-1]["content"].startswith("你是一个聪明的代码助手") and sent["messages"][-1][
        "content"
    ].endswith("q")


def test_explicit_history_is_sent_before_the_question_in_both_shapes(chat_api, llm):
    history = [{"role": "user", "content": "my name is Ada"}, ["assistant", "nice to meet you, Ada"]]
    post_events(f"{chat_api.url}/chat/chat", {"query": "what is my name?", "history": history})

    assert _user_and_assistant_turns(llm.chat_requests()[-1]) == [
        ("user", "my name is Ada"),
        ("assistant", "nice to meet you, Ada"),
        ("user", "what is my name?"),
    ]


def test_history_len_reads_the_conversation_back_from_the_database(chat_api, llm):
    conversation = uuid.uuid4().hex
    for query in ("first question", "second question", "third question"):
        post_events(f"{chat_api.url}/chat/chat", {"query": query, "conversation_id": conversation})
    post_events(f"{chat_api.url}/chat/chat", {"query": "and now?", "conversation_id": conversation, "history_len": 2})

    assert _user_and_assistant_turns(llm.chat_requests()[-1]) == [
        ("user", "second question"),
        ("assistant", "Echo: second question"),
        ("user", "third question"),
        ("assistant", "Echo: third question"),
        ("user", "and now?"),
    ]
    assert query_db(chat_api, "SELECT chat_type FROM conversation WHERE id = ?", (conversation,)) == [("llm_chat",)]
    assert query_db(chat_api, "SELECT COUNT(*) FROM message WHERE conversation_id = ?", (conversation,)) == [(4,)]


def test_history_stays_inside_its_conversation(chat_api, llm):
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    post_events(f"{chat_api.url}/chat/chat", {"query": "secret of other", "conversation_id": other})
    post_events(f"{chat_api.url}/chat/chat", {"query": "hi", "conversation_id": mine, "history_len": 5})

    assert _user_and_assistant_turns(llm.chat_requests()[-1]) == [("user", "hi")]


def test_feedback_is_stored_against_the_message(chat_api, llm):
    message_id = post_events(f"{chat_api.url}/chat/chat", {"query": "rate me"})[0]["message_id"]

    body = post_envelope(f"{chat_api.url}/chat/feedback", {"message_id": message_id, "score": 87, "reason": "clear"})

    assert body["code"] == 200 and body["msg"] == f"已反馈聊天记录 {message_id}"
    rows = query_db(chat_api, "SELECT feedback_score, feedback_reason FROM message WHERE id = ?", (message_id,))
    assert rows == [(87, "clear")]


def test_feedback_for_an_unknown_message_or_out_of_range_score_is_refused(chat_api):
    body = post_envelope(f"{chat_api.url}/chat/feedback", {"message_id": "0" * 32, "score": 50})
    assert body["code"] == 404

    response = httpx.post(f"{chat_api.url}/chat/feedback", json={"message_id": "x", "score": 101}, timeout=30)
    assert response.status_code == 422


def test_bad_input_gets_an_envelope_before_any_stream(chat_api, llm):
    url = f"{chat_api.url}/chat/chat"
    assert post_envelope(url, {"query": "   ", "stream": True})["code"] == 400
    unknown_model = post_envelope(url, {"query": "hi", "model_name": "no-such-model", "stream": True})
    assert unknown_model["code"] == 404 and "no-such-model" in unknown_model["msg"]
    assert unknown_model["data"]["available_models"] == [SCRIPTED_MODEL]
    unknown_prompt = post_envelope(url, {"query": "hi", "prompt_name": "nope"})
    assert unknown_prompt["code"] == 404 and "llm_chat/nope" in unknown_prompt["msg"]
    assert llm.chat_requests() == [], "nothing reached the model"
    response = httpx.post(url, json={"query": "hi", "temperature": 5}, timeout=30)
    assert response.status_code == 422


def test_completion_streams_raw_text_and_honours_echo(chat_api, llm):
    response = httpx.post(
        f"{chat_api.url}/other/completion", json={"query": "once upon", "stream": True, "echo": True}, timeout=60
    )
    chunks = [block.removeprefix("data: ") for block in response.text.split("\r\n\r\n") if block]
    assert len(chunks) > 1
    assert "".join(chunks) == "once upon continued(once upon)"
    sent = llm.requests[-1]
    assert sent["prompt"] in ("once upon", ["once upon"]) and sent["echo"] is True and sent["max_tokens"] == 1024

    single = httpx.post(f"{chat_api.url}/other/completion", json={"query": "abc"}, timeout=60)
    assert single.text == "data:  continued(abc)\r\n\r\n"


def test_tokens_reach_the_client_as_the_model_produces_them(chat_api, llm):
    llm.set_script([{"content": "one two three four", "delay": 0.4}])
    arrivals = []
    with httpx.stream("POST", f"{chat_api.url}/chat/chat", json={"query": "count", "stream": True}, timeout=60) as r:
        started = time.monotonic()
        for chunk in r.iter_text():
            arrivals.append((time.monotonic() - started, chunk))

    events = [chunk for _, chunk in arrivals if chunk.startswith("data: ")]
    assert [json.loads(chunk[6:-2])["text"] for chunk in events] == ["one", " two", " three", " four"]
    assert arrivals[-1][0] - arrivals[0][0] > 0.8, "each token is flushed when it comes, not at the end"


def test_a_client_that_leaves_mid_answer_still_gets_the_partial_answer_stored(chat_api, llm):
    llm.set_script([{"content": "alpha beta gamma delta epsilon zeta eta theta", "delay": 0.4}])
    with httpx.stream("POST", f"{chat_api.url}/chat/chat", json={"query": "leave early", "stream": True}) as r:
        chunks = r.iter_text()
        first = json.loads(next(chunks)[6:-2])
        next(chunks)
    message_id = first["message_id"]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        [(response,)] = query_db(chat_api, "SELECT response FROM message WHERE id = ?", (message_id,))
        if response:
            break
        time.sleep(0.2)
    assert response.startswith("alpha beta") and len(response) < len("alpha beta gamma delta epsilon zeta eta theta")
