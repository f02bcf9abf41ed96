"""How stream events become an answer: tokens, sources, agent steps and errors."""

from __future__ import annotations

from webui_pages.dialogue.replies import Reply, apply_event, steps_markdown, with_preview_links


def fold(events: list[dict], agent: bool = False) -> Reply:
    reply = Reply()
    for event in events:
        if apply_event(reply, event, agent=agent) == "error":
            break
    return reply


def test_llm_chat_tokens_and_message_id():
    reply = fold([{"text": "Hel", "message_id": "m1"}, {"text": "lo", "message_id": "m1"}])
    assert reply.answer == "Hello" and reply.message_id == "m1"


def test_knowledge_base_answer_then_sources():
    docs = ["出处 [1] [a.txt](http://h:1/knowledge_base/download_doc?knowledge_base_name=kb&file_name=a.txt) \n\nx"]
    reply = fold([{"answer": "Seven"}, {"answer": " am."}, {"docs": docs}])
    assert reply.answer == "Seven am." and reply.docs == docs and reply.error is None


def test_error_event_stops_the_answer():
    reply = fold([{"answer": "Par"}, {"code": 500, "msg": "LLM gone"}, {"answer": "ignored"}])
    assert reply.error == "LLM gone" and reply.answer == "Par"


def test_agent_steps_and_final_answer():
    events = [
        {"answer": "Thought: I should calculate."},
        {"tools": ["工具名称: calculator", "工具输入: 6*7", "工具输出: 42"]},
        {"answer": " Final Answer: 42"},
        {"final_answer": "The result is 42."},
    ]
    reply = fold(events, agent=True)
    assert reply.answer == "The result is 42."
    assert reply.steps == ["工具名称: calculator\n工具输入: 6*7\n工具输出: 42"]
    markdown = steps_markdown(reply.steps, reply.thinking)
    assert markdown.index("Thought: I should calculate.") < markdown.index("工具输出: 42")


def test_agent_without_final_answer_still_shows_what_it_said():
    reply = fold([{"answer": "I could not decide."}], agent=True)
    assert reply.answer == "I could not decide."


def test_preview_link_added_next_to_download_link():
    url = "http://127.0.0.1:7861/knowledge_base/download_doc?knowledge_base_name=kb&file_name=a.txt"
    doc = f"出处 [1] [a.txt]({url}) \n\nchunk"
    linked = with_preview_links(doc)
    assert f"[a.txt]({url}) [预览]({url}&preview=true)" in linked
    assert with_preview_links("出处 [1] [https://x.org](https://x.org) \n\nsnippet") == (
        "出处 [1] [https://x.org](https://x.org) \n\nsnippet"
    )
