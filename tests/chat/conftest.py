"""Fixtures of the chat tests: one API server for the session, talking to a scripted
OpenAI-protocol server (so tests see exactly what reached the model) and a local SearXNG."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.chat.servers.openai_scripted import ScriptedOpenAI, scripted_openai
from tests.chat.servers.search_apis import BING_KEY, EXA_KEY, fake_search_apis
from tests.chat.servers.searxng import fake_searxng
from tests.helpers.api_server import ApiServer, start_api_server

SCRIPTED_MODEL = "scripted-model"
KB_NAME = "chat_kb"

# The test's own knowledge base: each file answers one question and nothing else.
KB_FILES = {
    "zephyr_project.md": (
        "# Zephyr project\n\nThe Zephyr project launch code is 7391. "
        "The rocket leaves from the northern pad of the Kestrel spaceport at dawn."
    ),
    "tomato_garden.txt": (
        "Tomatoes grow best with six to eight hours of direct sunlight and deep watering twice a week. "
        "Mulch keeps the soil moist."
    ),
    "coffee_brewing.txt": (
        "For pour-over coffee use water at 94 degrees Celsius and a ratio of one gram of coffee to sixteen grams "
        "of water."
    ),
}
ZEPHYR_QUESTION = "What is the launch code of the Zephyr project?"

SEARX_RESULTS = [
    {
        "url": "http://example.test/penguins",
        "title": "Emperor penguins",
        "content": "Emperor penguins huddle together to survive winter storms in Antarctica.",
    },
    {
        "url": "http://example.test/krill",
        "title": "Antarctic krill",
        "content": "Krill is the main food of many Antarctic animals.",
    },
]

VOLCANO_PAGE_TEXT = "\n\n".join(
    [
        "Volcanoes form where magma from the mantle reaches the surface. Most of them sit along the edges of "
        "tectonic plates, where one plate slides under another or two plates pull apart. " * 2,
        "The Kilauea volcano in Hawaii erupted almost continuously from 1983 until 2018, adding new land "
        "to the island as its lava flows reached the ocean.",
        "Volcanic ash is made of tiny fragments of rock and glass. It can travel thousands of kilometres and "
        "stops aircraft engines, which is why airports close when a large eruption happens. " * 2,
    ]
)
WEB_PAGES = [
    {"title": "Volcanoes explained", "url": "http://example.test/volcanoes", "text": VOLCANO_PAGE_TEXT},
    {"title": "Glaciers", "url": "http://example.test/glaciers", "text": "Glaciers are rivers of ice."},
]


def scripted_env(llm: ScriptedOpenAI, **extra: str) -> dict[str, str]:
    """API server settings that route every model call to the scripted server."""
    port = llm.url.rsplit(":", 1)[1]
    env = {
        "CHATCHAT_FSCHAT_OPENAI_API__HOST": "127.0.0.1",
        "CHATCHAT_FSCHAT_OPENAI_API__PORT": port,
        "CHATCHAT_LLM_MODELS": json.dumps([SCRIPTED_MODEL]),
    }
    env.update(extra)
    return env


def parse_events(body: str) -> list:
    """Split an SSE body into its data payloads, parsed as Chatchat's clients do."""
    events = []
    for block in body.split("\r\n\r\n"):
        if not block.strip() or block.startswith(":"):
            continue
        assert block.startswith("data: "), f"not an SSE data event: {block[:80]!r}"
        events.append(json.loads(block[len("data: ") :]))
    return events


def post_events(url: str, payload: dict, timeout: float = 120.0) -> list:
    response = httpx.post(url, json=payload, timeout=timeout)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    return parse_events(response.text)


def post_envelope(url: str, payload: dict) -> dict:
    """An early error: plain JSON envelope with HTTP 200, not a stream."""
    response = httpx.post(url, json=payload, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


def query_db(api: ApiServer, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(api.kb_root / "info.db") as connection:
        return connection.execute(sql, params).fetchall()


def create_kb_with_files(api: ApiServer, kb_name: str, files: dict[str, str], headers: dict | None = None) -> None:
    response = httpx.post(
        f"{api.url}/knowledge_base/create_knowledge_base",
        json={"knowledge_base_name": kb_name},
        timeout=120,
        headers=headers,
    )
    assert response.json()["code"] == 200, response.text
    uploads = [("files", (name, text.encode(), "text/plain")) for name, text in files.items()]
    response = httpx.post(
        f"{api.url}/knowledge_base/upload_docs",
        data={"knowledge_base_name": kb_name, "override": "true"},
        files=uploads,
        timeout=300,
        headers=headers,
    )
    body = response.json()
    assert body["code"] == 200 and not body["data"]["failed_files"], body


@pytest.fixture(scope="session")
def scripted_llm():
    with scripted_openai([SCRIPTED_MODEL]) as server:
        yield server


@pytest.fixture
def llm(scripted_llm):
    """The scripted model, with no script and no recorded requests."""
    scripted_llm.reset()
    yield scripted_llm
    scripted_llm.reset()


@pytest.fixture(scope="session")
def searxng():
    with fake_searxng(SEARX_RESULTS) as server:
        yield server


@pytest.fixture(scope="session")
def search_apis():
    with fake_search_apis(WEB_PAGES) as server:
        yield server


@pytest.fixture(scope="session")
def chat_api(tmp_path_factory, scripted_llm, searxng, search_apis) -> ApiServer:
    data_root: Path = tmp_path_factory.mktemp("chat_api")
    env = scripted_env(
        scripted_llm,
        CHATCHAT_SEARXNG_URL=searxng.url,
        CHATCHAT_BING_SEARCH_URL=f"{search_apis.url}/v7.0/search",
        CHATCHAT_BING_SUBSCRIPTION_KEY=BING_KEY,
        CHATCHAT_METAPHOR_SEARCH_URL=f"{search_apis.url}/search",
        CHATCHAT_METAPHOR_API_KEY=EXA_KEY,
    )
    with start_api_server(data_root, **env) as api:
        create_kb_with_files(api, KB_NAME, KB_FILES)
        yield api


TEMPLATE_TAGS = re.compile(r"</?(?:指令|已知信息|问题)>")  # the default templates' tags, never in answers


def echo_of(prompt: str) -> str:
    """What the scripted model's echo of ``prompt`` reads as once answers lose the default templates' tags."""
    return "Echo: " + TEMPLATE_TAGS.sub("", prompt)
