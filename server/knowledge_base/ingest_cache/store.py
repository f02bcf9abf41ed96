"""A content-addressed key -> bytes store in one SQLite file, shared by every process of the stack.

Why SQLite: writes are atomic transactions, WAL lets the API server and init_database.py read and write
at once (busy_timeout makes a writer wait instead of failing), and the file survives restarts. Values are
JSON or raw float32 bytes, never pickles. Each value carries a CRC32, so a torn or bit-flipped entry is
noticed, dropped and rebuilt by the caller; a file that is not a database any more is deleted and
started afresh (it is only a cache). Deleting the file at any time is safe: an open handle notices
and opens a new one.

Eviction is least-recently-used over the values' sizes: past ``max_bytes`` the oldest entries go until
the total is back under 90% of it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from server.knowledge_base.paths import file_identity

logger = logging.getLogger(__name__)

# SQLite's default limit on bound parameters is 32766; stay well below it.
KEYS_PER_QUERY = 500
# Evict down to this share of the limit, so a full cache is not trimmed at every write.
EVICT_TO = 0.9
# The total is summed again once this share of the limit has been written since the last check.
CHECK_EVERY = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    crc INTEGER NOT NULL,
    size INTEGER NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
"""


class IngestCache:
    """Thread-safe within a process (one connection under a lock), process-safe through SQLite."""

    def __init__(self, path: Path, max_bytes: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file we opened
        self._written_since_check = 0
        self.hits = 0
        self.misses = 0
        self.dropped = 0  # corrupt entries found and removed

    # ---- reading ------------------------------------------------------------------------------

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """The intact values of the keys present; corrupt ones are deleted and count as misses."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        if not unique:
            return found
        with self._lock:
            connection = self._open()
            if connection is None:
                return found
            try:
                bad = []
                for start in range(0, len(unique), KEYS_PER_QUERY):
                    part = unique[start : start + KEYS_PER_QUERY]
                    marks = ",".join("?" * len(part))
                    query = f"SELECT key, value, crc FROM entries WHERE key IN ({marks})"  # noqa: S608
                    for key, value, crc in connection.execute(query, part):
                        if isinstance(value, bytes) and zlib.crc32(value) == crc:
                            found[key] = value
                        else:
                            bad.append(key)
                self._touch_and_drop(connection, list(found), bad)
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)
                return {}
        self.hits += len(found)
        self.misses += len(unique) - len(found)
        return found

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def discard(self, keys: Iterable[str]) -> None:
        """Forget entries whose value turned out unusable (e.g. it no longer decodes)."""
        keys = list(keys)
        if not keys:
            return
        with self._lock:
            connection = self._open()
            if connection is None:
                return
            try:
                self._touch_and_drop(connection, [], keys)
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)

    def _touch_and_drop(self, connection: sqlite3.Connection, used: list[str], bad: list[str]) -> None:
        if not used and not bad:
            return
        now = time.time()
        with connection:
            connection.executemany("UPDATE entries SET used = ? WHERE key = ?", [(now, k) for k in used])
            connection.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in bad])
        if bad:
            self.dropped += len(bad)
            logger.warning("ingest cache: dropped %d corrupt entries; they will be rebuilt", len(bad))

    # ---- writing ------------------------------------------------------------------------------

    def put_many(self, items: dict[str, bytes]) -> None:
        if not items:
            return
        now = time.time()
        rows = [(key, value, zlib.crc32(value), len(value), now) for key, value in items.items()]
        with self._lock:
            connection = self._open()
            if connection is None:
                return
            try:
                with connection:
                    connection.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                self._written_since_check += sum(row[3] for row in rows)
                if self._written_since_check >= self.max_bytes * CHECK_EVERY:
                    self._evict(connection)
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    def total_bytes(self) -> int:
        with self._lock:
            connection = self._open()
            if connection is None:
                return 0
            return connection.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]

    def _evict(self, connection: sqlite3.Connection) -> None:
        """Remove least-recently-used entries until the total is under EVICT_TO of the limit."""
        self._written_since_check = 0
        total = connection.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
        if total <= self.max_bytes:
            return
        excess = total - int(self.max_bytes * EVICT_TO)
        victims, freed = [], 0
        for key, size in connection.execute("SELECT key, size FROM entries ORDER BY used"):
            victims.append((key,))
            freed += size
            if freed >= excess:
                break
        with connection:
            connection.executemany("DELETE FROM entries WHERE key = ?", victims)
        connection.execute("PRAGMA incremental_vacuum")  # give the freed pages back to the disk
        logger.info("ingest cache: evicted %d entries (%d bytes) to stay under %d bytes", len(victims), freed, total)

    # ---- the file -----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection, self._identity = None, None

    def _open(self) -> sqlite3.Connection | None:
        """The connection, reopened when the file was deleted or replaced; None when it cannot be had."""
        if self._connection is not None and self._identity == file_identity(self.path):
            return self._connection
        self._close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA busy_timeout = 60000")
            # auto_vacuum only takes effect on a new file; it lets eviction shrink the file.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            return None
        except OSError as exc:
            logger.warning("ingest cache unavailable at %s: %s", self.path, exc)
            return None
        self._connection, self._identity = connection, file_identity(self.path)
        return connection

    def _on_error(self, exc: sqlite3.DatabaseError) -> None:
        """A busy or locked database is skipped this time; a damaged one is deleted and started afresh."""
        self._close()
        if isinstance(exc, sqlite3.OperationalError):
            logger.warning("ingest cache skipped: %s", exc)
            return
        logger.warning("ingest cache at %s is damaged (%s): deleting it and starting a new one", self.path, exc)
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            except OSError:
                pass

