"""The knowledge-base page's retrieval-test tab, driven by AppTest against the real API server."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.webui.support import ALPHA_TEXT, BETA_TEXT, new_app, texts
from webui_pages.api_client import ApiClient

# Distinctive texts: each question below has exactly one right file.
PANDA_TEXT = "熊猫基地参观须知。\n\n熊猫基地每天早上七点半开门，下午六点闭园。\n\n基地门票五十五元，学生半价。"
TEA_TEXT = "龙井茶的炒制工艺。\n\n龙井茶采摘后要经过摊放、杀青和辉锅三道工序，全程手工完成。"
FILES = {"panda.txt": PANDA_TEXT, "tea.txt": TEA_TEXT, "zephyr.txt": ALPHA_TEXT, "aurora.txt": BETA_TEXT}
QUESTIONS = [
    {"question": "熊猫基地几点开门？", "expected_file": "panda.txt"},
    {"question": "龙井茶的炒制工序有哪些？", "expected_file": "tea.txt"},
    {"question": "When does the Zephyr warehouse open?", "expected_file": "zephyr.txt"},
    {"question": "How many reviewers does an Aurora release need?", "expected_text": "two reviewers"},
]


@pytest.fixture(scope="module")
def kb_name(api_server):
    """One knowledge base for the module: ingesting is the slow part."""
    name = f"rt_{uuid.uuid4().hex[:8]}"
    with ApiClient(api_server.url, timeout=300) as api:
        assert api.create_knowledge_base(name).ok
        result = api.upload_kb_docs([(file, text.encode()) for file, text in FILES.items()], name)
        assert result.ok and not result.data.get("failed_files"), result
        yield name
        api.delete_knowledge_base(name)


@pytest.fixture
def page(ui_settings, kb_name):
    """The knowledge-base page with the test KB picked."""
    at = new_app(timeout=120)
    at.run()
    at.sidebar.radio(key="page").set_value("knowledge_base").run()
    at.selectbox(key="kb_pick").set_value(kb_name).run()
    assert not at.exception, at.exception
    return at


def table_with(at, column: str):
    """The shown dataframe that has ``column`` (the files table comes first on the page)."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with {column!r}: {[list(f.value.columns) for f in at.dataframe]}")


def search(at, query: str, mode: str | None = None):
    at.text_input(key="rt_query").input(query)
    if mode:
        at.selectbox(key="rt_mode").set_value(mode)
    at.button(key="rt_search").click().run()
    assert not at.exception, at.exception
    return table_with(at, "来源文件")


def test_tabs_keep_the_file_sections_first(page):
    assert [tab.label for tab in page.tabs] == ["知识库文件", "检索测试"]
    assert page.selectbox(key="rt_mode").value == "hybrid"
    assert page.button(key="rt_eval_run").disabled  # nothing to evaluate until a file is chosen


def test_chinese_question_ranks_the_right_file_first(page):
    table = search(page, "熊猫基地几点开门？")
    assert table["来源文件"].iloc[0] == "panda.txt"
    assert list(table["排名"]) == list(range(1, len(table) + 1))
    for column in ("距离分数（越小越相关）", "向量相似度", "关键词得分", "向量排名", "关键词排名", "融合排名"):
        assert column in table.columns, column
    assert set(table["检索方式"]) == {"hybrid"}
    assert any("七点半开门" in text for text in texts(page.text))  # the chunk's text, in its expander


@pytest.mark.parametrize("mode", ["vector", "keyword"])
def test_search_mode_reaches_the_server(page, mode):
    table = search(page, "Zephyr warehouse", mode)
    assert set(table["检索方式"]) == {mode}
    if mode == "keyword":
        assert table["来源文件"].iloc[0] == "zephyr.txt"
        assert "向量排名" not in table.columns  # keyword mode has no vector ranking


def test_evaluation_shows_metrics_chart_and_misses(page, kb_name):
    questions = "\n".join(json.dumps(q, ensure_ascii=False) for q in QUESTIONS).encode()
    page.file_uploader(key=f"rt_eval_file_{kb_name}").set_value(("questions.jsonl", questions, "application/json"))
    page.run()
    page.button(key="rt_eval_run").click().run()
    assert not page.exception, page.exception
    assert not page.error, texts(page.error)
    metrics = table_with(page, "hit@1").set_index("检索方式")
    assert list(metrics.index) == ["hybrid", "vector", "keyword"]
    assert metrics.loc["hybrid", "hit@1"] == 1.0
    assert metrics.loc["hybrid", "问题数"] == len(QUESTIONS)
    for column in ("hit@3", "hit@5", "mrr", "recall@5", "平均耗时（毫秒）"):
        assert column in metrics.columns, column
    charts = page.get("vega_lite_chart")  # st.bar_chart; AppTest has no wrapper class for it
    assert len(charts) == 1 and '"type": "bar"' in charts[0].proto.spec
    assert [e.label for e in page.expander if "未命中" in e.label][0].startswith("hybrid：未命中 0")


def test_malformed_questions_file_names_the_line(page, kb_name):
    lines = [json.dumps(QUESTIONS[0], ensure_ascii=False), json.dumps(QUESTIONS[2]), "{not json"]
    upload = ("bad.jsonl", "\n".join(lines).encode(), "application/json")
    page.file_uploader(key=f"rt_eval_file_{kb_name}").set_value(upload)
    page.run()
    page.button(key="rt_eval_run").click().run()
    assert not page.exception, page.exception
    errors = " ".join(texts(page.error))
    assert "line 3" in errors, errors
    assert not any("hit@1" in frame.value.columns for frame in page.dataframe)


def test_client_sends_search_mode_only_when_given_and_the_file_as_file():
    """An older server never sees search_mode unless asked; evaluate_retrieval's part is named "file"."""
    import httpx

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    with ApiClient("http://kb.test", timeout=5, api_key="") as api:
        api._client = httpx.Client(base_url=api.base_url, transport=httpx.MockTransport(answer))
        api.search_kb_docs("kb", query="q")
        api.search_kb_docs("kb", query="q", search_mode="keyword")
        api.evaluate_retrieval("kb", ("q.jsonl", b'{"question": "q", "expected_file": "a.txt"}'), ["vector", "hybrid"])
    assert "search_mode" not in json.loads(seen[0].content)
    assert json.loads(seen[1].content)["search_mode"] == "keyword"
    body = seen[2].content.decode()
    assert seen[2].url.path == "/knowledge_base/evaluate_retrieval"
    assert 'name="file"; filename="q.jsonl"' in body and "vector,hybrid" in body and 'name="top_k"' in body
