"""Knowledge-base, file and search-engine chat over HTTP: answers, cited sources, bad input."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.chat.conftest import (
    KB_NAME,
    SEARX_RESULTS,
    WEB_PAGES,
    ZEPHYR_QUESTION,
    echo_of,
    post_envelope,
    post_events,
    query_db,
    scripted_env,
)
from tests.chat.servers.http_proxy import recording_proxy
from tests.chat.servers.openai_scripted import scripted_openai
from tests.helpers.api_server import start_api_server
from tests.helpers.processes import free_port

NO_DOCS = "<span style='color:red'>未找到相关文档,该回答为大模型自身能力解答！</span>"
SOURCE = re.compile(r"^出处 \[(\d+)\] \[([^\]]*)\](?:\(([^)]*)\))? \n\n(.*)\n\n$", re.S)


def _sources(docs: list[str]) -> list[tuple[int, str, str | None, str]]:
    parsed = []
    for doc in docs:
        match = SOURCE.match(doc)
        assert match, f"not in Chatchat's source format: {doc!r}"
        parsed.append((int(match[1]), match[2], match[3], match[4]))
    return parsed


# ---- knowledge base chat -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_kb_chat_answers_from_the_right_file_and_cites_it(chat_api, llm, stream):
    events = post_events(
        f"{chat_api.url}/chat/knowledge_base_chat",
        {"query": ZEPHYR_QUESTION, "knowledge_base_name": KB_NAME, "top_k": 2, "stream": stream},
    )

    if stream:
        assert all(set(e) == {"answer", "message_id"} for e in events[:-1]) and len(events) > 2
        assert len({e["message_id"] for e in events}) == 1  # the final docs event names it too
        answer, docs = "".join(e["answer"] for e in events[:-1]), events[-1]["docs"]
    else:
        assert len(events) == 1
        answer, docs = events[0]["answer"], events[0]["docs"]
    sources = _sources(docs)
    assert [s[0] for s in sources] == [1, 2]
    number, title, link, text = sources[0]
    assert title == "zephyr_project.md" and "7391" in text
    assert parse_qs(urlparse(link).query) == {"knowledge_base_name": [KB_NAME], "file_name": ["zephyr_project.md"]}
    assert link.startswith(chat_api.url + "/knowledge_base/download_doc?")
    assert "launch code is 7391" in httpx.get(link, timeout=30).text
    # The retrieved chunk went into the default template, and the model's answer came back.
    prompt = llm.chat_requests()[-1]["messages"][-1]["content"]
    assert "<已知信息>" in prompt and "launch code is 7391" in prompt and ZEPHYR_QUESTION in prompt
    assert answer == echo_of(prompt)


@pytest.mark.parametrize("stream", [True, False])
def test_template_tags_the_model_copies_are_removed_from_the_answer(chat_api, llm, stream):
    # The scripted model streams word by word: "‹/" and " 问题>" arrive as two pieces.
    llm.set_script([{"content": "端口是 7861。‹/ 问题> 见 <b>API</b> 与 <问题"}])
    events = post_events(
        f"{chat_api.url}/chat/knowledge_base_chat",
        {"query": ZEPHYR_QUESTION, "knowledge_base_name": KB_NAME, "stream": stream},
    )
    answer = "".join(e.get("answer", "") for e in events)
    assert answer == "端口是 7861。 见 <b>API</b> 与 <问题"
    stored = query_db(chat_api, "SELECT response FROM message WHERE id = ?", (events[-1]["message_id"],))
    assert stored == [(answer,)]


def test_kb_chat_with_nothing_above_threshold_uses_the_empty_template(chat_api, llm):
    events = post_events(
        f"{chat_api.url}/chat/knowledge_base_chat",
        {"query": ZEPHYR_QUESTION, "knowledge_base_name": KB_NAME, "score_threshold": 0.0, "stream": True},
    )

    assert events[-1]["docs"] == [NO_DOCS]
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == f"请你回答我的问题:\n{ZEPHYR_QUESTION}\n\n"


def test_kb_chat_return_direct_gives_sources_without_the_model(chat_api, llm):
    url = f"{chat_api.url}/chat/knowledge_base_chat"
    request = {"query": "how much sunlight do tomatoes need", "knowledge_base_name": KB_NAME, "return_direct": True}

    streamed = post_events(url, {**request, "stream": True})
    single = post_events(url, {**request, "model_name": "not-even-checked"})

    assert len(streamed) == 1 and _sources(streamed[0]["docs"])[0][1] == "tomato_garden.txt"
    assert single == [{"answer": "", "docs": streamed[0]["docs"]}]
    assert llm.chat_requests() == []


def test_kb_chat_passes_history_and_prompt_name(chat_api, llm):
    post_events(
        f"{chat_api.url}/chat/knowledge_base_chat",
        {
            "query": "what temperature for coffee?",
            "knowledge_base_name": KB_NAME,
            "prompt_name": "english",
            "history": [{"role": "user", "content": "I like coffee"}, {"role": "assistant", "content": "me too"}],
        },
    )
    messages = llm.chat_requests()[-1]["messages"]
    assert [m["content"] for m in messages[:2]] == ["I like coffee", "me too"]
    assert messages[-1]["content"].startswith("Answer the question using only the context below.")
    assert "94 degrees Celsius" in messages[-1]["content"]


def test_kb_chat_bad_input(chat_api, llm):
    url = f"{chat_api.url}/chat/knowledge_base_chat"
    unknown = post_envelope(url, {"query": "x", "knowledge_base_name": "no_such_kb", "stream": True})
    assert unknown == {"code": 404, "msg": "未找到知识库 no_such_kb", "data": None}
    assert post_envelope(url, {"query": "x", "knowledge_base_name": "../etc"})["code"] == 403
    assert post_envelope(url, {"query": "", "knowledge_base_name": KB_NAME})["code"] == 400
    assert post_envelope(url, {"query": "x", "knowledge_base_name": KB_NAME, "prompt_name": "zzz"})["code"] == 404
    assert post_envelope(url, {"query": "x", "knowledge_base_name": KB_NAME, "model_name": "zzz"})["code"] == 404
    assert httpx.post(url, json={"query": "x", "knowledge_base_name": KB_NAME, "top_k": 0}).status_code == 422
    assert llm.chat_requests() == []


# ---- file chat -------------------------------------------------------------------------------------------


def test_file_chat_answers_from_an_uploaded_file(chat_api, llm):
    upload = httpx.post(
        f"{chat_api.url}/knowledge_base/upload_temp_docs",
        files=[("files", ("ferry.txt", b"The island ferry departs every 40 minutes from pier 9.", "text/plain"))],
        timeout=120,
    ).json()
    assert upload["code"] == 200, upload
    temp_id = upload["data"]["id"]

    events = post_events(
        f"{chat_api.url}/chat/file_chat",
        {"query": "How often does the ferry leave?", "knowledge_id": temp_id, "stream": True},
    )

    sources = _sources(events[-1]["docs"])
    assert sources[0][1] == "ferry.txt" and sources[0][2] is None and "pier 9" in sources[0][3]
    assert "pier 9" in llm.chat_requests()[-1]["messages"][-1]["content"]
    assert "".join(e.get("answer", "") for e in events[:-1]).startswith("Echo: ")

    single = post_events(
        f"{chat_api.url}/chat/file_chat", {"query": "ferry?", "knowledge_id": temp_id, "stream": False}
    )
    assert len(single) == 1 and single[0]["answer"].startswith("Echo: ") and single[0]["docs"]


def test_file_chat_with_an_unknown_id_says_to_upload_first(chat_api, llm):
    body = post_envelope(f"{chat_api.url}/chat/file_chat", {"query": "x", "knowledge_id": "expired123", "stream": True})
    assert body == {"code": 404, "msg": "未找到临时知识库 expired123，请先上传文件", "data": None}


# ---- search engine chat ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_search_chat_with_searxng_cites_the_results(chat_api, llm, searxng, stream):
    events = post_events(
        f"{chat_api.url}/chat/search_engine_chat",
        {"query": "how do penguins survive winter", "search_engine_name": "searxng", "top_k": 2, "stream": stream},
    )

    docs = events[-1]["docs"]
    assert _sources(docs) == [(n + 1, r["title"], r["url"], r["content"]) for n, r in enumerate(SEARX_RESULTS[:2])]
    assert searxng.queries[-1] == "how do penguins survive winter"
    prompt = llm.chat_requests()[-1]["messages"][-1]["content"]
    assert SEARX_RESULTS[0]["content"] in prompt and "how do penguins survive winter" in prompt
    answer = "".join(e.get("answer", "") for e in events)
    assert answer == echo_of(prompt)


def test_search_chat_with_bing_sends_the_key_and_cites_the_pages(chat_api, llm, search_apis):
    events = post_events(
        f"{chat_api.url}/chat/search_engine_chat",
        {"query": "volcano facts", "search_engine_name": "bing", "top_k": 2, "stream": True},
    )

    assert search_apis.bing_queries[-1]["q"] == "volcano facts" and search_apis.bing_queries[-1]["count"] == "2"
    assert [(s[1], s[2]) for s in _sources(events[-1]["docs"])] == [
        ("Volcanoes explained", "http://example.test/volcanoes"),
        ("Glaciers", "http://example.test/glaciers"),
    ]
    assert "Glaciers are rivers of ice." in llm.chat_requests()[-1]["messages"][-1]["content"]


def test_search_chat_with_metaphor_split_result_keeps_the_closest_passage(chat_api, llm, search_apis):
    url = f"{chat_api.url}/chat/search_engine_chat"
    query = "When did the Kilauea volcano erupt?"

    whole = post_events(url, {"query": query, "search_engine_name": "metaphor", "top_k": 1})
    split = post_events(url, {"query": query, "search_engine_name": "exa", "top_k": 1, "split_result": True})

    assert search_apis.exa_queries[-1]["query"] == query and search_apis.exa_queries[-1]["numResults"] == 1
    [(_, title, link, whole_text)] = _sources(whole[0]["docs"])
    assert title == "Volcanoes explained" and whole_text == WEB_PAGES[0]["text"]
    [(_, title, link, passage)] = _sources(split[0]["docs"])
    assert title == "Volcanoes explained" and link == "http://example.test/volcanoes"
    assert "from 1983 until 2018" in passage and len(passage) < len(WEB_PAGES[0]["text"]) / 2


def test_search_chat_bad_input(chat_api, llm):
    url = f"{chat_api.url}/chat/search_engine_chat"
    unknown = post_envelope(url, {"query": "x", "search_engine_name": "altavista", "stream": True})
    assert unknown["code"] == 404 and unknown["msg"] == "未支持搜索引擎 altavista"
    assert post_envelope(url, {"query": " ", "search_engine_name": "searxng"})["code"] == 400


def test_search_goes_through_the_proxy_and_unreachable_engines_explain_themselves(tmp_path, searxng):
    with scripted_openai(["scripted-model"]) as llm, recording_proxy() as (proxy_url, seen):
        closed = f"http://127.0.0.1:{free_port()}"
        env = scripted_env(llm, CHATCHAT_SEARXNG_URL=searxng.url, CHATCHAT_SEARCH_PROXY=proxy_url)
        with start_api_server(tmp_path, **env) as api:
            events = post_events(
                f"{api.url}/chat/search_engine_chat", {"query": "krill", "search_engine_name": "searxng"}
            )
            assert _sources(events[-1]["docs"])[0][1] == "Emperor penguins"
            assert any(url.startswith(f"{searxng.url}/search?") and "format=json" in url for url in seen)

            # DuckDuckGo is https: the recording proxy cannot tunnel it, like a firewall that blocks it.
            blocked = post_events(
                f"{api.url}/chat/search_engine_chat", {"query": "krill", "search_engine_name": "duckduckgo"}
            )
        # Nothing listens at `closed`: neither the search engine nor the gateway. The scripted model is
        # reached as an online model (ONLINE_LLM_MODEL), directly at its own URL.
        online = {"scripted-online": {"api_base_url": f"{llm.url}/v1", "api_key": "k", "model_name": "scripted-model"}}
        closed_env = {
            "CHATCHAT_SEARXNG_URL": closed,
            "CHATCHAT_FSCHAT_OPENAI_API__PORT": closed.rsplit(":", 1)[1],
            "CHATCHAT_LLM_MODELS": json.dumps(["scripted-online"]),
            "CHATCHAT_ONLINE_LLM_MODEL": json.dumps(online),
        }
        with start_api_server(tmp_path / "closed", **closed_env) as api:
            down = post_events(f"{api.url}/chat/search_engine_chat", {"query": "k", "search_engine_name": "searxng"})
            online_answer = post_events(f"{api.url}/chat/chat", {"query": "via online model"})
            bing = post_envelope(f"{api.url}/chat/search_engine_chat", {"query": "x", "search_engine_name": "bing"})
            exa = post_envelope(f"{api.url}/chat/search_engine_chat", {"query": "x", "search_engine_name": "exa"})
            no_gateway = post_envelope(f"{api.url}/chat/chat", {"query": "x", "model_name": "SmolLM2-135M-Instruct"})
    assert bing == {"code": 404, "msg": "要使用Bing搜索引擎，需要设置 `BING_SUBSCRIPTION_KEY`", "data": None}
    assert exa["code"] == 404 and "METAPHOR_API_KEY" in exa["msg"]
    assert online_answer[0]["text"] == "Echo: via online model"
    assert llm.chat_requests()[-1]["model"] == "scripted-model"
    assert no_gateway["code"] == 500 and "无法连接" in no_gateway["msg"]
    for events in (blocked, down):
        assert len(events) == 1 and events[0]["code"] == 500
        assert "请求失败" in events[0]["msg"] and "SEARCH_PROXY" in events[0]["msg"]
        assert "Traceback" not in events[0]["msg"]


def test_concurrent_kb_chats_each_get_their_own_answer_and_sources(chat_api, llm):
    questions = {
        "zephyr_project.md": ZEPHYR_QUESTION,
        "tomato_garden.txt": "How much sunlight do tomatoes need?",
        "coffee_brewing.txt": "What water temperature for pour-over coffee?",
    }
    jobs = [(file, question) for file, question in questions.items()] * 3

    def ask(question: str) -> list:
        payload = {"query": question, "knowledge_base_name": KB_NAME, "top_k": 1, "stream": True}
        return post_events(f"{chat_api.url}/chat/knowledge_base_chat", payload)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(ask, [question for _, question in jobs]))

    for (file, question), events in zip(jobs, results, strict=True):
        answer = "".join(e["answer"] for e in events[:-1])
        assert answer.startswith("Echo: ") and question in answer
        assert _sources(events[-1]["docs"])[0][1] == file


def test_kb_chat_exchange_is_stored_in_its_conversation_and_can_be_scored(chat_api, llm):
    conversation_id = "kbconv" + "0" * 26
    events = post_events(
        f"{chat_api.url}/chat/knowledge_base_chat",
        {"query": ZEPHYR_QUESTION, "knowledge_base_name": KB_NAME, "conversation_id": conversation_id},
    )
    message_id = events[-1]["message_id"]
    rows = query_db(
        chat_api, "SELECT conversation_id, chat_type, query, response FROM message WHERE id = ?", (message_id,)
    )
    assert rows == [(conversation_id, "knowledge_base_chat", ZEPHYR_QUESTION, events[0]["answer"])]

    body = post_envelope(f"{chat_api.url}/chat/feedback", {"message_id": message_id, "score": 0, "reason": "vague"})
    assert body["code"] == 200
    scored = query_db(chat_api, "SELECT feedback_score, feedback_reason FROM message WHERE id = ?", (message_id,))
    assert scored == [(0, "vague")]
