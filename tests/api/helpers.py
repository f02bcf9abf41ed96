"""HTTP helpers shared by the API tests (they speak to a real server process)."""

from __future__ import annotations

import json

import httpx


def create_kb(client: httpx.Client, name: str) -> None:
    answer = client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": name}).json()
    assert answer["code"] == 200, answer


def upload(client: httpx.Client, kb_name: str, files: dict[str, bytes], **form) -> dict:
    parts = [("files", (name, content)) for name, content in files.items()]
    response = client.post("/knowledge_base/upload_docs", data={"knowledge_base_name": kb_name, **form}, files=parts)
    assert response.status_code == 200, response.text
    return response.json()


def sse_events(response: httpx.Response) -> list[dict]:
    """Parse an event stream as Chatchat's client does: `data: <json>` events, pings skipped."""
    events = []
    for block in response.text.split("\r\n\r\n"):
        if block.startswith("data: "):
            events.append(json.loads(block[len("data: ") :]))
    return events
