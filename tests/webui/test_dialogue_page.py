"""The dialogue page driven by AppTest against the real API server, with no LLM running."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from tests.helpers.processes import child_env, free_port, running_process
from tests.webui.support import ALPHA_TEXT, new_app, texts
from webui_pages.api_client import ApiClient
from webui_pages.dialogue.conversations import history_for_request, new_message, to_markdown


@pytest.fixture
def api(ui_settings):
    with ApiClient(ui_settings.url, timeout=120) as client:
        yield client


def test_llm_down_is_said_and_questions_get_readable_errors(api):
    kb = f"chat_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(kb).ok
    assert api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode())], kb).ok

    at = new_app()
    at.run()
    assert not at.exception, at.exception
    assert any("大模型服务不可用" in w for w in texts(at.warning)), texts(at.warning)

    at.sidebar.selectbox(key="dialogue_mode").set_value("kb").run()
    assert kb in at.sidebar.selectbox(key="chat_kb").options
    at.sidebar.selectbox(key="chat_kb").set_value(kb).run()
    at.chat_input(key="chat_input").set_value("When does the Zephyr warehouse open?").run()
    assert not at.exception, at.exception
    roles = [m.name for m in at.chat_message]
    assert roles == ["user", "assistant"]
    assert at.chat_message[0].markdown[0].value == "When does the Zephyr warehouse open?"
    answer_errors = texts(at.chat_message[1].error)
    assert answer_errors and answer_errors[0].startswith("出错了："), answer_errors
    assert "Traceback" not in answer_errors[0]

    # The agent's live status box ends in an error state with the same readable message.
    at.sidebar.selectbox(key="dialogue_mode").set_value("agent").run()
    at.chat_input(key="chat_input").set_value("What is 6 * 7?").run()
    assert not at.exception, at.exception
    assert len(at.chat_message) == 4
    assert texts(at.chat_message[3].error)[0].startswith("出错了：")

    name = at.session_state["conversations"][at.session_state["conversation_id"]]["name"]
    at.sidebar.button(key="clear").click().run()
    assert not at.exception, at.exception
    assert [m.name for m in at.chat_message] == ["assistant"]  # only the greeting
    current = at.session_state["conversations"][at.session_state["conversation_id"]]
    assert current["messages"] == [] and current["name"] == name


def test_sidebar_follows_the_mode(api):
    at = new_app()
    at.run()
    labels = texts_of_sidebar_labels(at)
    assert "匹配知识条数：" not in labels
    at.sidebar.selectbox(key="dialogue_mode").set_value("kb").run()
    assert "匹配知识条数：" in texts_of_sidebar_labels(at)
    assert at.sidebar.slider(key="chat_threshold").value <= 1.0
    at.sidebar.selectbox(key="dialogue_mode").set_value("search").run()
    engines = at.sidebar.selectbox(key="search_engine").options
    assert engines == api.list_search_engines().data
    at.sidebar.selectbox(key="dialogue_mode").set_value("file").run()
    assert at.sidebar.button(key="file_chat_upload").disabled  # nothing uploaded yet
    at.sidebar.file_uploader[0].set_value([("notes.txt", ALPHA_TEXT.encode(), "text/plain")]).run()
    at.sidebar.button(key="file_chat_upload").click().run()
    assert not at.exception, at.exception
    assert at.session_state["file_chat_id"], "upload_temp_docs gave an id for file chat"
    assert any(at.session_state["file_chat_id"] in c for c in texts(at.sidebar.caption))


def test_an_empty_conversation_greets_with_the_model_and_knowledge_base(api):
    kb = f"greet_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(kb).ok
    at = new_app()
    at.run()
    assert not at.exception, at.exception
    model = at.sidebar.selectbox(key="llm_model").value
    greeting = at.chat_message[0].markdown[0].value
    assert at.chat_message[0].name == "assistant" and f"**{model}（未运行）**" in greeting and "LLM 对话" in greeting
    at.sidebar.selectbox(key="dialogue_mode").set_value("kb").run()
    at.sidebar.selectbox(key="chat_kb").set_value(kb).run()
    greeting = "\n".join(texts(at.chat_message[0].markdown))
    assert "知识库问答" in greeting and f"知识库 **{kb}**" in greeting
    api.delete_knowledge_base(kb)


def test_the_kb_settings_come_right_after_the_mode(api):
    at = new_app()
    at.run()
    at.sidebar.selectbox(key="dialogue_mode").set_value("kb").run()
    keys = [w.key for w in at.sidebar if getattr(w, "key", None)]
    assert keys.index("dialogue_mode") < keys.index("chat_kb") < keys.index("llm_model"), keys


@pytest.mark.parametrize(
    ("env", "model", "expected"),
    [
        ({}, "SmolLM2-135M-Instruct", 0.2),  # the packaged model's own default
        ({"CHATCHAT_TEMPERATURE": "0.5"}, "SmolLM2-135M-Instruct", 0.2),
        ({"CHATCHAT_MODEL_TEMPERATURES": "{}", "CHATCHAT_TEMPERATURE": "0.5"}, "SmolLM2-135M-Instruct", 0.5),
        ({"CHATCHAT_LLM_MODELS": '["SmolLM2-135M-Instruct", "other-model"]'}, "other-model", 0.7),
    ],
)
def test_the_temperature_starts_at_the_settings_value_for_the_model(ui_settings, monkeypatch, env, model, expected):
    from configs import reload_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    at = new_app()
    at.run()
    at.sidebar.selectbox(key="llm_model").set_value(model).run()  # another model restarts the slider
    assert not at.exception, at.exception
    assert at.sidebar.slider(key=f"temperature_{model}").value == pytest.approx(expected)


def texts_of_sidebar_labels(at) -> list[str]:
    widgets = [*at.sidebar.selectbox, *at.sidebar.number_input, *at.sidebar.slider]
    return [w.label for w in widgets]


def test_conversations_new_rename_switch_delete(api):
    at = new_app()
    at.run()
    first_id = at.session_state["conversation_id"]
    at.sidebar.button(key="conversation_new").click().run()
    second_id = at.session_state["conversation_id"]
    assert second_id != first_id
    assert len(at.session_state["conversations"]) == 2

    at.sidebar.text_input(key=f"conversation_name_{second_id}").input("Warehouse questions")
    at.sidebar.button(key="conversation_rename").click().run()
    assert at.session_state["conversations"][second_id]["name"] == "Warehouse questions"

    picker = at.sidebar.selectbox[0]
    picker.set_value(first_id).run()
    assert at.session_state["conversation_id"] == first_id

    at.sidebar.button(key="conversation_delete").click().run()
    assert not at.exception, at.exception
    assert list(at.session_state["conversations"]) == [second_id]
    assert at.session_state["conversation_id"] == second_id

    if api.list_conversations().ok:  # the server keeps them: a fresh session sees the renamed one
        fresh = new_app()
        fresh.run()
        names = [c["name"] for c in fresh.session_state["conversations"].values()]
        assert "Warehouse questions" in names


def test_api_down_is_said(monkeypatch):
    from configs import reload_settings

    monkeypatch.setenv("CHATCHAT_API_SERVER__PORT", str(free_port()))
    reload_settings()
    try:
        at = new_app()
        at.run()
        assert not at.exception, at.exception
        assert any("API 服务器不可用" in e for e in texts(at.error)), texts(at.error)
    finally:
        monkeypatch.undo()
        reload_settings()


def test_a_server_that_is_not_ours_gives_messages_not_tracebacks(tmp_path, monkeypatch):
    """A plain file server answers every path with HTML or 501: both pages must still just say so."""
    from configs import reload_settings

    port = free_port()
    (tmp_path / "health").write_text("ok")  # so the UI believes the server is up and goes on to the pages
    log = tmp_path / "http.log"
    args = ["-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with running_process(args, env=child_env(tmp_path), log_path=log, health_url=f"http://127.0.0.1:{port}/"):
        monkeypatch.setenv("CHATCHAT_API_SERVER__PORT", str(port))
        reload_settings()
        try:
            for page in ("dialogue", "knowledge_base"):
                at = new_app()
                at.run()
                at.sidebar.radio(key="page").set_value(page).run()
                assert not at.exception, at.exception
                shown = texts(at.warning) + texts(at.error)
                assert shown and not any("<html" in text.lower() for text in shown), shown
        finally:
            monkeypatch.undo()
            reload_settings()


def test_english_ui(ui_settings, monkeypatch):
    from configs import reload_settings

    monkeypatch.setenv("CHATCHAT_UI_LANGUAGE", "en")
    reload_settings()
    at = new_app()
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="dialogue_mode").label == "Chat mode:"
    assert any("The LLM is down" in w for w in texts(at.warning))


def test_export_and_history_helpers():
    messages = [
        new_message("user", "Where is the dock?"),
        new_message("assistant", "Behind building C.", docs=["出处 [1] [alpha.txt](http://x) \n\nThe dock"]),
        new_message("user", "Broken one"),
        new_message("assistant", "", error="LLM down"),
    ]
    markdown = to_markdown("Warehouse", messages, now=datetime(2024, 5, 1, 12, 0))
    assert markdown.startswith("# Warehouse")
    assert "2024-05-01 12:00" in markdown
    assert markdown.index("Where is the dock?") < markdown.index("Behind building C.") < markdown.index("alpha.txt")
    assert "LLM down" in markdown
    # A failed exchange is not sent back to the model as history.
    answered = [
        {"role": "user", "content": "Where is the dock?"},
        {"role": "assistant", "content": "Behind building C."},
    ]
    assert history_for_request(messages, 3) == answered
    more = [*messages, new_message("user", "Second?"), new_message("assistant", "Yes.")]
    assert history_for_request(more, 1) == [
        {"role": "user", "content": "Second?"},
        {"role": "assistant", "content": "Yes."},
    ]
    assert history_for_request(more, 5) == [*answered, *history_for_request(more, 1)]
    assert history_for_request(messages, 0) == []
