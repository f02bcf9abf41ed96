"""The web UI in a real browser (Debian's chromium, headless, driven by Playwright) against
``startup.py -a`` on free ports: ask a knowledge-base question, watch the answer stream in with
its sources; upload a file on the knowledge-base page and find it in the table.

Screenshots go to $CHATCHAT_TEST_ARTIFACTS (default tests/artifacts/).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers.processes import child_env, free_port, is_free, running_process, wait_for_http
from tests.webui.support import ALPHA_TEXT, REPO_ROOT
from webui_pages.api_client import ApiClient

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CHATCHAT_TEST_ARTIFACTS", Path(REPO_ROOT) / "tests" / "artifacts"))
STACK_START_TIMEOUT = 420  # a cold CPU machine loads torch and two models

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]


def free_port_run(count: int) -> int:
    """A port such that it and the ``count - 1`` ports after it are all free right now."""
    taken = set()
    for _ in range(200):
        base = free_port()
        candidates = [p for p in range(base, base + count) if p <= 65535 and p not in taken]
        if len(candidates) == count and all(is_free(p) for p in candidates):
            return base
        taken.add(base)
    raise RuntimeError(f"no run of {count} free ports found")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Everything (controller, gateway, workers, API, UI) as users start it: ``python startup.py -a``."""
    data_root = tmp_path_factory.mktemp("browser_stack")
    ports = {name: free_port() for name in ("api", "webui", "controller", "gateway")}
    ports["worker"] = free_port_run(3)  # the LLM worker takes the base port, the embeddings worker the next
    env = child_env(
        data_root,
        CHATCHAT_API_SERVER__PORT=str(ports["api"]),
        CHATCHAT_WEBUI_SERVER__PORT=str(ports["webui"]),
        CHATCHAT_FSCHAT_CONTROLLER__PORT=str(ports["controller"]),
        CHATCHAT_FSCHAT_OPENAI_API__PORT=str(ports["gateway"]),
        CHATCHAT_MODEL_WORKER_BASE_PORT=str(ports["worker"]),
        CHATCHAT_MAX_TOKENS="48",  # short answers keep the test quick on a CPU
    )
    webui_url = f"http://127.0.0.1:{ports['webui']}"
    api_url = f"http://127.0.0.1:{ports['api']}"
    log_path = data_root / "startup.log"
    with running_process(
        ["startup.py", "-a"],
        env=env,
        log_path=log_path,
        health_url=f"{webui_url}/_stcore/health",
        timeout=STACK_START_TIMEOUT,
    ) as proc:
        wait_for_http(f"{api_url}/health", proc, timeout=60, log_path=log_path)
        with ApiClient(api_url, timeout=180) as api:
            assert api.create_knowledge_base("samples").ok
            assert api.upload_kb_docs([("zephyr_notes.txt", ALPHA_TEXT.encode())], "samples").ok
        db = Path(env["CHATCHAT_KB_ROOT_PATH"]) / "info.db"
        yield {"webui": webui_url, "api": api_url, "log": log_path, "db": db}


@pytest.fixture
def page(stack, request):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
        browser.close()


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the Streamlit selectbox labelled ``label``."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label)
    box.locator("input").click()
    page.get_by_role("option", name=option, exact=False).first.click()


def test_the_first_page_greets_and_shows_the_kb_settings_without_scrolling(stack, page):
    page.goto(stack["webui"])
    greeting = page.get_by_test_id("stChatMessage").first
    greeting.get_by_text("SmolLM2-135M-Instruct").wait_for()
    assert "LLM 对话" in greeting.inner_text()
    pick(page, "请选择对话模式", "知识库问答")
    greeting.get_by_text("samples").wait_for()
    page.screenshot(path=str(ARTIFACTS / "first-page-greeting.png"))  # the viewport: what a user sees first
    viewport = page.viewport_size
    for label in ("请选择知识库", "匹配知识条数", "知识匹配分数阈值"):
        box = page.get_by_test_id("stSidebar").get_by_text(label).bounding_box()
        assert box and box["y"] + box["height"] <= viewport["height"], (label, box)


def test_kb_question_streams_an_answer_with_sources(stack, page):
    page.goto(stack["webui"])
    page.get_by_test_id("stChatInput").wait_for()
    # The running model is listed with the device its worker reports, and nothing is said to be down.
    model_box = page.get_by_test_id("stSelectbox").filter(has_text="选择LLM模型")
    shown = model_box.locator("input").input_value() or model_box.inner_text()
    assert re.search(r"^SmolLM2-135M-Instruct · (cpu|cuda)", shown), shown
    assert page.get_by_text("大模型服务不可用").count() == 0
    pick(page, "请选择对话模式", "知识库问答")
    page.get_by_test_id("stSidebar").get_by_text("匹配知识条数").wait_for()
    page.screenshot(path=str(ARTIFACTS / "dialogue-kb-mode.png"), full_page=True)

    chat = page.get_by_test_id("stChatInput").locator("textarea")
    chat.fill("When does the Zephyr warehouse open?")
    chat.press("Enter")

    answers = page.get_by_test_id("stChatMessage")
    seen = watch_answer_grow(page, timeout=180)
    assert seen["partial"], "the answer was never shown while it was being written"
    page.get_by_text("知识库匹配结果").first.wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "dialogue-answer.png"), full_page=True)

    assert answers.count() == 2
    answer_text = answers.nth(1).inner_text()
    assert "出错了" not in answer_text, answer_text
    page.get_by_text("知识库匹配结果").first.click()
    source_link = answers.nth(1).get_by_role("link", name="zephyr_notes.txt").first
    source_link.wait_for()
    href = source_link.get_attribute("href")
    assert "/knowledge_base/download_doc?" in href and "file_name=zephyr_notes.txt" in href
    preview = answers.nth(1).get_by_role("link", name="预览").first
    assert "preview=true" in preview.get_attribute("href")
    assert "warehouse opens at seven" in answers.nth(1).inner_text()
    page.wait_for_timeout(500)  # let the expander finish opening
    page.screenshot(path=str(ARTIFACTS / "dialogue-sources.png"), full_page=True)

    # LLM chat answers carry a message id: thumbs down with a reason is stored against it.
    pick(page, "请选择对话模式", "LLM 对话")
    chat.fill("Say hello.")
    chat.press("Enter")
    answers.nth(3).get_by_text("反馈", exact=True).click(timeout=180_000)
    answers.nth(3).get_by_text("不满意").click()
    answers.nth(3).get_by_label("原因（可选）").fill("Too short")
    answers.nth(3).get_by_role("button", name="提交反馈").click()
    page.get_by_text("感谢反馈").wait_for()
    page.screenshot(path=str(ARTIFACTS / "dialogue-feedback.png"), full_page=True)
    assert stored_feedback(stack["db"]) == [(0, "Too short")]


def stored_feedback(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT feedback_score, feedback_reason FROM message WHERE feedback_score >= 0"
        ).fetchall()


def watch_answer_grow(page, timeout: float) -> dict:
    """Poll the assistant's bubble: streaming shows a cursor (▌) after partial text before the end."""
    seen = {"partial": False}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bubbles = page.get_by_test_id("stChatMessage")
        if bubbles.count() >= 2:
            text = bubbles.nth(1).inner_text()
            if re.search(r"\S\s*▌", text):
                seen["partial"] = True
            if seen["partial"] and "▌" not in text:
                break
            if page.get_by_text("知识库匹配结果").count():
                break
        time.sleep(0.05)
    return seen


def test_upload_a_file_and_see_it_in_the_table(stack, page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page.goto(stack["webui"])
    page.get_by_test_id("stSidebar").get_by_text("知识库管理").click()
    # The page is drawn in more than one Streamlit run; wait until its file table is there, so the
    # uploader we fill is the final one and not one a rerun is about to replace.
    page.get_by_test_id("stDataFrame").get_by_text("zephyr_notes.txt").wait_for(state="attached")
    uploader = page.get_by_test_id("stFileUploader").first  # the files tab's; the retrieval-test tab has another
    file = {"name": "dock_hours.txt", "mimeType": "text/plain", "buffer": b"The loading dock closes at six."}
    for attempt in range(3):
        uploader.locator("input[type=file]").set_input_files(files=[file])
        try:
            uploader.get_by_text("dock_hours.txt").wait_for(timeout=20_000)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    page.get_by_role("button", name="添加文件到知识库").click()
    page.get_by_text("已导入 1 个文件，失败 0 个").first.wait_for(timeout=120_000)
    # Said once; the summary line counts the new file; the uploader is empty again.
    assert page.get_by_text("已导入 1 个文件，失败 0 个").count() == 1
    page.get_by_text("· 2 个文件").wait_for()
    assert uploader.get_by_text("dock_hours.txt").count() == 0
    table = page.get_by_test_id("stDataFrame")
    table.get_by_text("dock_hours.txt").wait_for(
        state="attached"
    )  # the grid draws on a canvas; cells are its a11y layer
    table.get_by_text("zephyr_notes.txt").wait_for(state="attached")
    page.screenshot(path=str(ARTIFACTS / "knowledge-base-upload.png"), full_page=True)
    with ApiClient(stack["api"]) as api:
        assert "dock_hours.txt" in api.list_kb_docs("samples").data
