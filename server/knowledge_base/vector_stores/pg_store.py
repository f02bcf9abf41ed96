"""Chatchat's vs_type "pg": chunks in a PostgreSQL table with a pgvector column.

One table per store (``chatkb_<hash>``: knowledge-base names may be any Unicode), an HNSW index for
inner product over the unit vectors, and one row per store in ``chatkb_markers`` holding its change
marker. Every write block is one transaction: it starts by locking the store's marker row (so
writers on any host take turns) and ends with its commit, so a server that stops mid-request leaves
nothing half-written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from server.knowledge_base.vector_stores.base import StoredChunk, StoreSettingsError, StoreUnavailable
from server.knowledge_base.vector_stores.remote import RemoteStore, Row

MARKERS_TABLE = "chatkb_markers"
CONNECT_TIMEOUT_SECONDS = 5
# HNSW finds at most ef_search rows per query (pgvector's default 40), raised to the rows asked for.
# 100 at least: with 40, recall@10 against exact search was 0.94 on bench_scale's 20,000 chunks.
MIN_EF_SEARCH = 100
MAX_EF_SEARCH = 1000


def describe(uri: str) -> str:
    """host:port/database of a connection URI, without user or password."""
    parts = urlsplit(uri)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


def _translated(method):
    """Errors of the server or the connection become one-line StoreUnavailable errors."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"PostgreSQL vector store at {self.address} failed: {first_line}") from exc

    return wrapper


def connect(uri: str) -> psycopg.Connection:
    if not uri:
        raise StoreSettingsError(
            "vs_type 'pg' needs KBS_CONFIG.pg.connection_uri (postgresql://user:password@host:5432/db)"
        )
    try:
        connection = psycopg.connect(uri, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.ProgrammingError as exc:  # a malformed URI
        raise StoreSettingsError(f"KBS_CONFIG.pg.connection_uri is not a valid PostgreSQL URI: {exc}") from None
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {describe(uri)} (KBS_CONFIG.pg.connection_uri): {reason}"
        ) from None
    return connection


class PgStore(RemoteStore):
    def __init__(self, dimension: int, uri: str, name: str):
        super().__init__(dimension)
        self.address = describe(uri)
        self.table = name
        self.connection = connect(uri)
        self._ef_search = 40
        try:
            self._create_schema()
            from pgvector.psycopg import register_vector

            register_vector(self.connection)
        except BaseException:
            self.connection.close()
            raise

    @_translated
    def _create_schema(self) -> None:
        t = self.table
        with self.connection.transaction():
            # Two processes creating the same tables at once would collide on the catalog: one at a time.
            self.connection.execute("SELECT pg_advisory_xact_lock(hashtext('chatkb_schema'))")
            try:
                self.connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.FeatureNotSupported as exc:
                raise StoreSettingsError(f"PostgreSQL at {self.address} has no pgvector extension: {exc}") from None
            self.connection.execute(f"CREATE TABLE IF NOT EXISTS {MARKERS_TABLE} (name text PRIMARY KEY, marker text)")
            self.connection.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (seq bigserial, doc_id text PRIMARY KEY, source text, "
                f"text text NOT NULL, metadata jsonb NOT NULL, terms jsonb NOT NULL, "
                f"embedding vector({int(self.dimension)}) NOT NULL)"
            )
            self.connection.execute(f"CREATE INDEX IF NOT EXISTS {t}_source ON {t} (source, seq)")
            self.connection.execute(f"CREATE INDEX IF NOT EXISTS {t}_seq ON {t} (seq)")
            self.connection.execute(f"CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_ip_ops)")
            self.connection.execute(
                f"INSERT INTO {MARKERS_TABLE} (name, marker) VALUES (%s, NULL) ON CONFLICT (name) DO NOTHING", (t,)
            )
            found = self.connection.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'", (t,)
            ).fetchone()
        if found and found[0] != self.dimension:
            raise ValueError(
                f"vector store {t} has dimension {found[0]}, the embedding model gives {self.dimension}: "
                "rebuild it with init_database.py --recreate-vs"
            )

    def _begin(self) -> None:
        if self.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            self.connection.execute("BEGIN")

    # ---- server primitives ------------------------------------------------------------------
    @_translated
    def _count(self) -> int:
        return int(self.connection.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    @_translated
    def _insert(self, rows: list[Row]) -> None:
        self._begin()
        with self.connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {self.table} (doc_id, source, text, metadata, terms, embedding) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (chunk.doc_id, _source(chunk), chunk.page_content, Jsonb(chunk.metadata), Jsonb(terms), vector)
                    for chunk, terms, vector in rows
                ],
            )

    @_translated
    def _delete(self, doc_ids: list[str]) -> None:
        self._begin()
        self.connection.execute(f"DELETE FROM {self.table} WHERE doc_id = ANY(%s)", (doc_ids,))

    @_translated
    def _fetch(self, doc_ids: list[str], with_vectors: bool) -> dict[str, Row]:
        if not doc_ids:
            return {}
        vector = "embedding" if with_vectors else "NULL"
        found = self.connection.execute(
            f"SELECT doc_id, text, metadata, {vector} FROM {self.table} WHERE doc_id = ANY(%s)", (list(doc_ids),)
        ).fetchall()
        return {doc_id: (StoredChunk(doc_id, text, metadata), {}, _array(v)) for doc_id, text, metadata, v in found}

    @_translated
    def _source_ids(self, sources: list[str], limit: int | None) -> list[str]:
        found = self.connection.execute(
            f"SELECT doc_id FROM {self.table} WHERE source = ANY(%s) ORDER BY seq LIMIT %s", (sources, limit)
        ).fetchall()
        return [row[0] for row in found]

    @_translated
    def _nearest(self, vector: np.ndarray, top_k: int) -> list[tuple[StoredChunk, float]]:
        wanted = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, top_k))
        if wanted != self._ef_search:
            self.connection.execute(f"SET hnsw.ef_search = {int(wanted)}")
            self._ef_search = wanted
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        found = self.connection.execute(
            f"SELECT doc_id, text, metadata, (embedding <#> %s) * -1 FROM {self.table} ORDER BY embedding <#> %s LIMIT %s",
            (query, query, top_k),
        ).fetchall()
        return [
            (StoredChunk(doc_id, text, metadata), float(similarity)) for doc_id, text, metadata, similarity in found
        ]

    @_translated
    def _scan(self, batch_size: int, with_vectors: bool) -> Iterator[list[Row]]:
        last = 0
        vector = "embedding" if with_vectors else "NULL"
        while True:
            found = self.connection.execute(
                f"SELECT seq, doc_id, text, metadata, terms, {vector} FROM {self.table} WHERE seq > %s ORDER BY seq LIMIT %s",
                (last, batch_size),
            ).fetchall()
            if not found:
                return
            last = found[-1][0]
            yield [
                (StoredChunk(doc_id, text, metadata), terms, _array(v)) for _, doc_id, text, metadata, terms, v in found
            ]

    @_translated
    def _remove_all(self) -> None:
        self._begin()
        self.connection.execute(f"DELETE FROM {self.table}")

    @_translated
    def _read_marker(self, writing: bool) -> str | None:
        if writing:
            self._begin()
            lock = " FOR UPDATE"
        else:
            lock = ""
        row = self.connection.execute(
            f"SELECT marker FROM {MARKERS_TABLE} WHERE name = %s{lock}", (self.table,)
        ).fetchone()
        return row[0] if row else None

    @_translated
    def _write_marker(self, marker: str) -> None:
        self._begin()
        self.connection.execute(f"UPDATE {MARKERS_TABLE} SET marker = %s WHERE name = %s", (marker, self.table))

    @_translated
    def _commit(self) -> None:
        if self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.connection.execute("COMMIT")

    # ---- lifetime -------------------------------------------------------------------------------
    def discard(self) -> None:
        try:
            self.connection.close()  # an open transaction is rolled back by the server
        except psycopg.Error:
            pass

    @_translated
    def drop(self) -> None:
        self._commit()
        with self.connection.transaction():
            self.connection.execute(f"DROP TABLE IF EXISTS {self.table}")
            self.connection.execute(f"DELETE FROM {MARKERS_TABLE} WHERE name = %s", (self.table,))
        self.discard()


def _source(chunk: StoredChunk) -> str | None:
    source = chunk.metadata.get("source")
    return None if source is None else str(source)


def _array(value) -> np.ndarray | None:
    if value is None:
        return None
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)
