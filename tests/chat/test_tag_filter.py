"""The prompt template's tags are removed from answers, whatever pieces the tokens come in."""

from __future__ import annotations

import pytest

from configs.prompts import DEFAULT_PROMPT_TEMPLATES
from server.chat.tag_filter import TagStripper, template_tags

KB_TEMPLATE = DEFAULT_PROMPT_TEMPLATES["knowledge_base_chat"]["default"]


def stream_through(text: str, tags, size: int) -> list[str]:
    stripper = TagStripper(tags)
    pieces = [stripper.feed(text[i : i + size]) for i in range(0, len(text), size)]
    return [*pieces, stripper.flush()]


def test_the_tags_are_those_written_in_the_template_not_its_variables():
    assert template_tags(KB_TEMPLATE) == {"指令", "已知信息", "问题"}
    assert template_tags("<ctx>{{ context }}</ctx> {{ '<b>' }} Question: {{ question }}") == {"ctx"}
    assert template_tags(DEFAULT_PROMPT_TEMPLATES["knowledge_base_chat"]["english"]) == set()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_tags_split_over_pieces_are_removed_and_other_markup_is_kept(size):
    answer = "端口是 7861。</问题>\n‹/问题> ＜ 已知信息 ＞<b>API</b> a < b, <问题是什么"
    pieces = stream_through(answer, template_tags(KB_TEMPLATE), size)
    assert "".join(pieces) == "端口是 7861。\n <b>API</b> a < b, <问题是什么"


def test_text_is_held_back_only_while_it_may_become_a_tag():
    stripper = TagStripper({"问题"})
    assert stripper.feed("答案 <") == "答案 "
    assert stripper.feed("/问") == ""
    assert stripper.feed("x") == "</问x"  # not a tag after all: sent at once
    assert stripper.feed("<问题 是") == "<问题 是"


def test_without_tags_pieces_pass_unchanged():
    assert stream_through("a <b> </c>", set(), 1) == ["a", " ", "<", "b", ">", " ", "<", "/", "c", ">", ""]
