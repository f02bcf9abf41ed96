"""Folder sync as a real process beside the real API server: files added, edited and deleted in a
knowledge base's content/ folder, or in another folder it follows, reach the knowledge base."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers.api_server import start_api_server
from tests.helpers.processes import running_process

SETTLE = 0.5  # seconds a file must stay unchanged before it is read


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """The API server, two knowledge bases, and folder sync: `inplace` follows its content/, `mirror`
    follows an outside folder."""
    root = tmp_path_factory.mktemp("folder_sync")
    outside = root / "handbook"
    outside.mkdir()
    with start_api_server(root / "data") as api:
        for kb in ("inplace", "mirror"):
            body = {"knowledge_base_name": kb}
            reply = httpx.post(f"{api.url}/knowledge_base/create_knowledge_base", json=body, timeout=120)
            assert reply.json()["code"] == 200, reply.text
        # A file already there before sync starts is caught up with at start.
        (api.kb_root / "inplace" / "content").mkdir(parents=True, exist_ok=True)
        (api.kb_root / "inplace" / "content" / "before.txt").write_text("The archive room is on floor nine.")
        env = {
            **api.env,
            "CHATCHAT_FOLDER_SYNC_SETTLE_SECONDS": str(SETTLE),
            "CHATCHAT_FOLDER_SYNC_BATCH_MS": "300",
        }
        log = root / "folder_sync.log"
        args = ["-m", "server.knowledge_base.folder_sync", "-n", "inplace", f"mirror={outside}", "--api", api.url]
        with running_process(args, env=env, log_path=log):
            yield api, api.kb_root / "inplace" / "content", outside, log


def files_in_kb(api, kb: str) -> dict[str, dict]:
    reply = httpx.get(f"{api.url}/knowledge_base/list_file_details", params={"knowledge_base_name": kb}, timeout=60)
    return {row["file_name"]: row for row in reply.json()["data"] if row["in_db"]}


def chunks_of(api, kb: str, name: str) -> str:
    body = {"knowledge_base_name": kb, "query": "", "file_name": name}
    reply = httpx.post(f"{api.url}/knowledge_base/search_docs", json=body, timeout=60)
    return "\n".join(doc["page_content"] for doc in reply.json())


def eventually(check: Callable[[], bool], what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen; folder sync log:\n{log.read_text()}"
        time.sleep(0.2)


def test_files_there_before_sync_started_are_ingested(synced):
    api, content, _, log = synced
    eventually(lambda: "before.txt" in files_in_kb(api, "inplace"), "catching up with before.txt", log)


def test_add_edit_delete_in_content(synced):
    api, content, _, log = synced
    (content / "guide").mkdir(exist_ok=True)
    path = content / "guide" / "dock.md"
    path.write_text("# Dock\n\nThe loading dock opens at six.")
    eventually(lambda: "guide/dock.md" in files_in_kb(api, "inplace"), "adding guide/dock.md", log)
    assert "opens at six" in chunks_of(api, "inplace", "guide/dock.md")

    path.write_text("# Dock\n\nThe loading dock now opens at eight, and closes at noon on Fridays.")
    eventually(lambda: "opens at eight" in chunks_of(api, "inplace", "guide/dock.md"), "the edit", log)
    assert "opens at six" not in chunks_of(api, "inplace", "guide/dock.md")

    path.unlink()
    eventually(lambda: "guide/dock.md" not in files_in_kb(api, "inplace"), "the deletion", log)
    assert chunks_of(api, "inplace", "guide/dock.md") == ""


def test_a_burst_of_changes_is_one_batch(synced):
    api, content, _, log = synced
    # The first sync must be over, or before.txt joins the burst's batch (when this test runs first).
    eventually(lambda: "before.txt" in files_in_kb(api, "inplace"), "catching up with before.txt", log)
    names = [f"burst_{n}.txt" for n in range(6)]
    for n, name in enumerate(names):
        (content / name).write_text(f"Burst file number {n} is about topic {n * 7}.")
    eventually(lambda: set(names) <= set(files_in_kb(api, "inplace")), "ingesting the burst", log)
    batches = [line for line in log.read_text().splitlines() if "burst_" in line and "ingested" in line]
    assert len(batches) == 1 and "ingested 6 files" in batches[0], batches


def test_a_file_still_being_written_is_read_once_complete(synced):
    api, content, _, log = synced
    path = content / "slow_copy.txt"
    with open(path, "w") as handle:
        for part in range(8):  # written over ~2.4 s: longer than SETTLE, in pauses shorter than it
            handle.write(f"Part {part} of the slow copy mentions the code word alpha{part}.\n")
            handle.flush()
            time.sleep(0.3)
        handle.write("The last line names the code word omega.\n")
    eventually(lambda: "slow_copy.txt" in files_in_kb(api, "inplace"), "ingesting slow_copy.txt", log)
    assert "omega" in chunks_of(api, "inplace", "slow_copy.txt")
    ingestions = re.findall(r"ingested \d+ files \([^)]*slow_copy\.txt", log.read_text())
    assert len(ingestions) == 1, log.read_text()


def test_add_edit_delete_in_a_followed_outside_folder(synced):
    api, content, outside, log = synced
    copy = api.kb_root / "mirror" / "content" / "policy.txt"
    (outside / "policy.txt").write_text("Visitors sign in at the front desk.")
    (outside / "~$policy.docx").write_bytes(b"an office lock file")  # never synced
    eventually(lambda: "policy.txt" in files_in_kb(api, "mirror"), "uploading policy.txt", log)
    assert copy.read_text() == "Visitors sign in at the front desk."

    (outside / "policy.txt").write_text("Visitors sign in at the side entrance after six.")
    eventually(lambda: "side entrance" in chunks_of(api, "mirror", "policy.txt"), "the edit", log)
    assert copy.read_text() == "Visitors sign in at the side entrance after six."

    (outside / "policy.txt").unlink()
    eventually(lambda: "policy.txt" not in files_in_kb(api, "mirror"), "the deletion", log)
    assert not copy.exists()
    assert set(files_in_kb(api, "mirror")) == set()
