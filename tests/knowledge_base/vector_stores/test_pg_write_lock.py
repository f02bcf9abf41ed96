"""With the metadata in PostgreSQL, a knowledge base's write lock is an advisory lock on that server: another
process (on any host) holding it makes writers here wait, and other knowledge bases are not held up. The
same holds for appends to one file-chat upload."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from tests.helpers.processes import REPO_ROOT, child_env

HOLDER = """
import sys
from server.knowledge_base.locks import kb_write_lock
with kb_write_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()  # hold until told
print("released", flush=True)
"""


@pytest.fixture
def pg_metadata(pg_database, kb_root, monkeypatch) -> str:
    from configs import reload_settings

    uri = pg_database.replace("postgresql://", "postgresql+psycopg://", 1)
    monkeypatch.setenv("CHATCHAT_SQLALCHEMY_DATABASE_URI", uri)
    reload_settings()
    yield uri
    monkeypatch.delenv("CHATCHAT_SQLALCHEMY_DATABASE_URI")
    reload_settings()


@pytest.fixture
def holder(pg_metadata, tmp_path):
    """Start a process holding knowledge base "alpha"'s lock; write a line to its stdin to release it."""
    env = child_env(tmp_path, CHATCHAT_SQLALCHEMY_DATABASE_URI=pg_metadata)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "alpha"], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def take_in_thread(kb_name: str) -> tuple[threading.Event, threading.Event]:
    """Take ``kb_name``'s lock in a thread; (taken, release): set release to let the lock go."""
    from server.knowledge_base.locks import kb_write_lock

    taken, release = threading.Event(), threading.Event()

    def run():
        with kb_write_lock(kb_name):
            taken.set()
            release.wait(30)

    threading.Thread(target=run, daemon=True).start()
    return taken, release


def advisory_locks(uri: str) -> int:
    with psycopg.connect(uri.replace("+psycopg", "")) as connection:
        query = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return connection.execute(query).fetchone()[0]


def test_a_lock_held_by_another_process_makes_writers_wait_and_other_kbs_go_on(holder, pg_metadata, kb_root):
    assert advisory_locks(pg_metadata) == 1  # the other process's lock lives in PostgreSQL
    waiting, release_waiting = take_in_thread("alpha")
    other, release_other = take_in_thread("beta")
    assert other.wait(10), "a different knowledge base must not wait"
    assert not waiting.wait(1.5), "alpha is held by the other process"
    release_other.set()
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    assert waiting.wait(10), "alpha is free once the other process let it go"
    release_waiting.set()
    assert not (kb_root / ".locks").exists()  # no file lock was used


def test_a_holder_that_dies_frees_the_lock(holder, pg_metadata):
    waiting, release = take_in_thread("alpha")
    assert not waiting.wait(1)
    holder.kill()  # no unlock: PostgreSQL ends its session, and its locks with it
    assert waiting.wait(10)
    release.set()


def test_writing_to_takes_the_advisory_lock(pg_metadata, kb_root):
    from server.db.engine import create_tables
    from server.db.repositories import knowledge_base as kb_repo
    from server.knowledge_base import service

    create_tables()
    service.create_kb("gamma")
    with service.writing_to(kb_repo.get_kb("gamma")):
        assert advisory_locks(pg_metadata) == 1
        with service.writing_to(kb_repo.get_kb("gamma")):  # re-entrant in one thread
            assert advisory_locks(pg_metadata) == 1
    assert advisory_locks(pg_metadata) == 0


CREATOR = """
import sys
from server.db.engine import create_tables
print("ready", flush=True)
sys.stdin.readline()  # start together
print(create_tables(), flush=True)
"""


def test_processes_creating_the_tables_at_once_all_succeed(pg_metadata, tmp_path):
    """API servers on several hosts start at once against a fresh database: without a lock around the
    schema work, concurrent CREATE TABLEs fail with duplicate-type or already-exists errors."""
    env = child_env(tmp_path, CHATCHAT_SQLALCHEMY_DATABASE_URI=pg_metadata)
    creators = [
        subprocess.Popen(
            [sys.executable, "-c", CREATOR], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    try:
        assert all(proc.stdout.readline().strip() == "ready" for proc in creators)
        for proc in creators:
            proc.stdin.write("\n")
            proc.stdin.flush()
        outcomes = [proc.communicate(timeout=60) for proc in creators]
    finally:
        for proc in creators:
            proc.kill()
    from server.db.engine import SCHEMA_VERSION

    assert [out.strip() for out, _ in outcomes] == [str(SCHEMA_VERSION)] * 4, [err[-500:] for _, err in outcomes]


TEMP_HOLDER = """
import sys
from pathlib import Path
from server.knowledge_base.locks import temp_store_lock
with temp_store_lock(sys.argv[1], Path(sys.argv[2])):
    print("held", flush=True)
    sys.stdin.readline()  # hold until told
"""


def test_an_append_to_a_file_chat_upload_waits_for_another_hosts_append(pg_metadata, kb_root, tmp_path):
    from server.knowledge_base import service
    from server.knowledge_base.temp_stores import TempStoreRegistry

    registry = TempStoreRegistry(4, 600, kb_root / ".temp_stores")
    temp_id, _ = registry.add_files([("ferry.txt", b"The ferry leaves from pier 9.")], service.default_chunking())
    # Another host: its lock file is on its own disk, so only the advisory lock can make us wait.
    env = child_env(tmp_path, CHATCHAT_SQLALCHEMY_DATABASE_URI=pg_metadata)
    other_disk = tmp_path / "other-host" / ".lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", TEMP_HOLDER, temp_id, str(other_disk)], cwd=REPO_ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        appended = threading.Event()

        def append():
            registry.add_files([("bakery.txt", b"Rye bread on Saturdays.")], service.default_chunking(), temp_id)
            appended.set()

        threading.Thread(target=append, daemon=True).start()
        assert not appended.wait(2)  # waits for the other host's append
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert appended.wait(30)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    hits = registry.search(temp_id, "ferry rye", 3, 1.0, "keyword")
    assert {hit.chunk.metadata["source"] for hit in hits} == {"ferry.txt", "bakery.txt"}
