"""The ingest cache's SQLite store: integrity, damage, deletion, LRU eviction, two writing processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

from server.knowledge_base.ingest_cache.store import IngestCache
from tests.conftest import REPO_ROOT

MIB = 1 << 20


def test_values_survive_a_new_handle(tmp_path):
    IngestCache(tmp_path / "c.db", MIB).put_many({"a": b"alpha", "b": b"beta"})
    reopened = IngestCache(tmp_path / "c.db", MIB)  # as after a restart
    assert reopened.get_many(["a", "b", "c"]) == {"a": b"alpha", "b": b"beta"}
    assert (reopened.hits, reopened.misses) == (2, 1)


def test_a_truncated_or_altered_entry_is_dropped_and_can_be_written_again(tmp_path):
    cache = IngestCache(tmp_path / "c.db", MIB)
    cache.put_many({"torn": b"0123456789" * 10, "flipped": b"abcdef", "fine": b"ok"})
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("UPDATE entries SET value = substr(value, 1, 7) WHERE key = 'torn'")
        db.execute("UPDATE entries SET value = X'616263646566FF' WHERE key = 'flipped'")
    assert cache.get_many(["torn", "flipped", "fine"]) == {"fine": b"ok"}
    assert cache.dropped == 2
    with sqlite3.connect(tmp_path / "c.db") as db:
        assert db.execute("SELECT key FROM entries ORDER BY key").fetchall() == [("fine",)]
    cache.put("torn", b"rebuilt")
    assert cache.get("torn") == b"rebuilt"


def test_a_file_that_is_not_a_database_is_replaced(tmp_path):
    path = tmp_path / "c.db"
    first = IngestCache(path, MIB)
    first.put("a", b"alpha")
    first.close()
    path.write_bytes(b"this is not sqlite at all" * 100)
    cache = IngestCache(path, MIB)
    assert cache.get("a") is None  # a miss, not an exception
    cache.put("a", b"again")
    assert cache.get("a") == b"again"
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_deleting_the_file_while_in_use_is_safe(tmp_path):
    path = tmp_path / "c.db"
    cache = IngestCache(path, MIB)
    cache.put("a", b"alpha")
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"c.db{suffix}").unlink(missing_ok=True)
    assert cache.get("a") is None
    cache.put("b", b"beta")
    assert path.is_file() and IngestCache(path, MIB).get("b") == b"beta"


def test_least_recently_used_entries_are_evicted_past_the_limit(tmp_path):
    limit = 10_000
    cache = IngestCache(tmp_path / "c.db", limit)
    for i in range(8):
        cache.put(f"old{i}", bytes(1000))
    assert cache.get("old0") == bytes(1000)  # used again: now the most recent of the old ones
    for i in range(8):
        cache.put(f"new{i}", bytes(1000))
    assert cache.total_bytes() <= limit
    kept = set(cache.get_many([f"old{i}" for i in range(8)] + [f"new{i}" for i in range(8)]))
    assert {f"new{i}" for i in range(8)} <= kept
    assert "old0" in kept and "old1" not in kept


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from server.knowledge_base.ingest_cache.store import IngestCache
    cache = IngestCache(__import__("pathlib").Path({path!r}), 1 << 30)
    me = sys.argv[1]
    for round in range(40):
        # half the keys are shared with the other writer, half are this writer's own
        cache.put_many({{f"shared{{i}}": b"same value %d" % i for i in range(round * 5, round * 5 + 5)}})
        cache.put_many({{f"{{me}}{{i}}": me.encode() * 50 for i in range(round * 5, round * 5 + 5)}})
        assert len(cache.get_many([f"shared{{i}}" for i in range(round * 5)])) == round * 5
    """
)


def test_two_processes_fill_the_cache_at_once(tmp_path):
    path = tmp_path / "c.db"
    script = WRITER.format(root=str(REPO_ROOT), path=str(path))
    writers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("p", "q")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    cache = IngestCache(path, MIB)
    keys = [f"{prefix}{i}" for prefix in ("shared", "p", "q") for i in range(200)]
    found = cache.get_many(keys)
    assert len(found) == 600 and cache.dropped == 0
    assert found["shared7"] == b"same value 7" and found["q199"] == b"q" * 50
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
