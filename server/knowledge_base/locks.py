"""Locks that hold across processes, and across hosts when the metadata is in PostgreSQL.

Every write to a knowledge base (its store, its rows, its files) happens under that knowledge base's lock
(``service.writing_to``); appends to one file-chat upload take that upload's lock (``temp_stores``). Which
lock depends on where the metadata database lives:

* PostgreSQL (``SQLALCHEMY_DATABASE_URI`` ``postgresql...``): a session-level ``pg_advisory_lock`` on the
  metadata server, so API processes on several hosts that share that server exclude each other. The lock is
  taken on a connection of its own, opened for it and closed after (not one of the pool's): a thread waiting
  for a lock must not hold a pool connection the lock's holder needs, and a connection that dies (a crashed
  process, a network cut) takes its locks with it, so a lock never outlives its holder. The key is 64 bits of
  a hash of a fixed prefix and the knowledge base's name: the same on every host, and apart from the other
  advisory locks of the project (``pg_store``'s schema lock uses ``hashtext``, 32 bits).
* Anything else (SQLite, the default): a file lock (a knowledge base's under ``KB_ROOT/.locks``). SQLite is
  one file on one host's disk, so its users share that host, and a lock on its disk is enough.

Neither lock is re-entrant; ``writing_to`` tracks what each thread holds. On PostgreSQL one more advisory lock,
``SCHEMA_LOCK_KEY``, makes processes that start at once create or upgrade the metadata tables one at a time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from configs import get_settings
from server.knowledge_base import paths

logger = logging.getLogger(__name__)

KEY_PREFIX = b"chatkb:kb-write:"

_lock_engines: dict[str, Engine] = {}


def uses_postgresql(database_url: str) -> bool:
    return database_url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _key(name: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


# Held while the metadata tables are created or upgraded (server.db.engine.create_tables).
SCHEMA_LOCK_KEY = _key(b"chatkb:metadata-schema")


def kb_write_lock(kb_name: str):
    """Hold the knowledge base's write lock (waiting as long as it takes) for the block."""
    return shared_lock(KEY_PREFIX + kb_name.encode("utf-8"), paths.kb_lock_path(kb_name))


def temp_store_lock(temp_id: str, lock_file: Path):
    """Hold the lock of one file-chat upload (its appends take turns) for the block."""
    return shared_lock(b"chatkb:temp-store:" + temp_id.encode("utf-8"), lock_file)


@contextmanager
def shared_lock(name: bytes, lock_file: Path) -> Iterator[None]:
    """Lock ``name`` for every process that shares the metadata database: an advisory lock on PostgreSQL,
    else a file lock on ``lock_file``."""
    database_url = get_settings().database_url
    if uses_postgresql(database_url):
        with advisory_lock(database_url, _key(name)):
            yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file)):
        yield


@contextmanager
def advisory_lock(database_url: str, key: int) -> Iterator[None]:
    """Session-level advisory lock ``key`` on a connection of its own, released (and closed) after the block."""
    with _lock_engine(database_url).connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()  # end the implicit transaction: the lock belongs to the session, not to it
        try:
            yield
        finally:
            _unlock(connection, key)


def _unlock(connection, key: int) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        connection.commit()
    except DBAPIError as exc:
        # The connection is gone, and the server released its locks with it: nothing is left held.
        logger.warning("could not unlock knowledge-base lock %s (its connection is gone): %s", key, exc)


def _lock_engine(database_url: str) -> Engine:
    """An engine without a pool: each lock gets a fresh connection, closed when the lock is released."""
    engine = _lock_engines.get(database_url)
    if engine is None:
        engine = _lock_engines.setdefault(database_url, create_engine(database_url, poolclass=NullPool))
    return engine
