"""Chatchat's vs_type "pg": chunks in a PostgreSQL table with a pgvector column.

One table per store (``chatkb_<hash>``: knowledge-base names may be any Unicode), an HNSW index for
inner product over the unit vectors, and one row per store in ``chatkb_markers`` holding its change
marker. Every write block is one transaction: it starts by locking the store's marker row (so
writers on any host take turns) and ends with its commit, so a server that stops mid-request leaves
nothing half-written.

Change log (remote.py's incremental catch-up): rows get ``seq`` from the table's sequence; a
deletion is logged in ``chatkb_changes`` with a number from the same sequence. Writers take turns,
so numbers grow in commit order. Old log entries are pruned; ``chatkb_markers.horizon`` says how far
back the log still reaches (a clear moves it to now), and a store behind it rebuilds in full.

Bulk loads: rows go in with binary COPY. Each insert into an HNSW index walks the graph, so a block
that loads more than BULK_LOAD_ROWS rows into a table that held fewer drops the index and builds it
again before its commit, in the same transaction (bench_scale.py: docs/vector_stores.md). Dropping
it locks the table: other processes' searches of this store wait until the load commits.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import psycopg

from configs.settings import PgConfig
from server.knowledge_base.vector_stores.base import StoredChunk, StoreSettingsError, StoreUnavailable
from server.knowledge_base.vector_stores.remote import RemoteStore, Row

MARKERS_TABLE = "chatkb_markers"
CHANGES_TABLE = "chatkb_changes"
# Sequence numbers (rows stored or deleted) the change log keeps; a store further behind rebuilds in full.
CHANGE_LOG_KEEP = 1_000_000
# A write block that stores more rows than this, and more than the table held, builds the index afterwards.
# Measured (bench_scale, 20,000 rows, 384-d): ~10 ms a row through the graph, ~1.2 ms a row built at once;
# below a few thousand rows either way takes seconds, above it the build wins by far.
BULK_LOAD_ROWS = 2_000
# maintenance_work_mem for an index build: the HNSW graph (vector + ~1 KB of links a row) should fit,
# or pgvector goes on much more slowly; capped so one build cannot take the database server's memory.
INDEX_BUILD_MEMORY_CAP_MB = 2048
CONNECT_TIMEOUT_SECONDS = 5
# HNSW finds at most ef_search rows per query (pgvector's default 40), raised to the rows asked for.
# 100 by default (KBS_CONFIG.pg.ef_search): on bench_scale's 1,000,000 chunks recall@10 against exact
# search was 0.64 with 40, 0.82 with 100 and 0.90 with 200, for 3.8, 5.4 and 7.0 ms a search. Not 200:
# pgvector's planner costs an index scan by ef_search, and at 6,000 rows it then chose a full scan.
MAX_EF_SEARCH = 1000  # pgvector's own limit


def describe(uri: str) -> str:
    """host:port/database of a connection URI, without user or password."""
    parts = urlsplit(uri)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


def _translated(method):
    """Errors of the server or the connection become one-line StoreUnavailable errors."""

    def unavailable(self, exc: Exception) -> StoreUnavailable:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(f"PostgreSQL vector store at {self.address} failed: {first_line}")

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise unavailable(self, exc) from exc

    @functools.wraps(method)
    def generator_wrapper(self, *args, **kwargs):  # a scan fails while it is iterated, not when called
        try:
            yield from method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise unavailable(self, exc) from exc

    return generator_wrapper if inspect.isgeneratorfunction(method) else wrapper


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
    def __init__(self, dimension: int, uri: str, name: str, settings: PgConfig | None = None):
        super().__init__(dimension)
        settings = settings or PgConfig()
        self.address = describe(uri)
        self.table = name
        self.min_ef_search = settings.ef_search
        self.hnsw = (settings.hnsw_m, settings.hnsw_ef_construction)
        self.connection = connect(uri)
        self._ef_search = 40
        self._block = _WriteBlock()
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
                f"ALTER TABLE {MARKERS_TABLE} ADD COLUMN IF NOT EXISTS horizon bigint NOT NULL DEFAULT 0"
            )
            self.connection.execute(
                f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (name text NOT NULL, seq bigint NOT NULL, "
                "doc_id text NOT NULL, PRIMARY KEY (name, seq, doc_id))"
            )
            # The deleted row's terms, so other processes' keyword indexes can drop it without keeping them.
            self.connection.execute(f"ALTER TABLE {CHANGES_TABLE} ADD COLUMN IF NOT EXISTS terms jsonb")
            self.connection.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (seq bigserial, doc_id text PRIMARY KEY, source text, "
                f"text text NOT NULL, metadata jsonb NOT NULL, terms jsonb NOT NULL, "
                f"embedding vector({int(self.dimension)}) NOT NULL)"
            )
            # Vectors in the row itself: out of line (TOAST, where a long text pushes them) the planner
            # costs a full scan by the small heap alone and prefers it to HNSW, and every search then
            # fetches every vector from TOAST (31 ms at 6,000 chunks against 2.5 ms).
            self.connection.execute(f"ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN")
            self.connection.execute(f"CREATE INDEX IF NOT EXISTS {t}_source ON {t} (source, seq)")
            self.connection.execute(f"CREATE INDEX IF NOT EXISTS {t}_seq ON {t} (seq)")
            self.connection.execute(_create_hnsw_index(t, *self.hnsw))
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
        self._sequence = self.connection.execute("SELECT pg_get_serial_sequence(%s, 'seq')", (t,)).fetchone()[0]

    def _begin(self) -> None:
        if self.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            self.connection.execute("BEGIN")
            self._block = _WriteBlock()

    # ---- server primitives ------------------------------------------------------------------
    @_translated
    def _count(self) -> int:
        return int(self.connection.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    @_translated
    def _insert(self, rows: list[Row]) -> None:
        self._begin()
        self._drop_index_for_a_bulk_load(len(rows))
        columns = "doc_id, source, text, metadata, terms, embedding"
        statement = f"COPY {self.table} ({columns}) FROM STDIN WITH (FORMAT BINARY)"
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["text", "text", "text", "jsonb", "jsonb", "vector"])
            for chunk, terms, vector in rows:
                copy.write_row((chunk.doc_id, _source(chunk), chunk.page_content, chunk.metadata, terms, vector))
        self._block.rows_added += len(rows)

    def _drop_index_for_a_bulk_load(self, incoming: int) -> None:
        """Before rows go in: once this block's rows pass BULK_LOAD_ROWS and outnumber what the table held
        before it, drop the index (the rest of the load skips the graph; the commit builds it)."""
        block = self._block
        loaded = block.rows_added + incoming
        if block.index_dropped or loaded <= BULK_LOAD_ROWS:
            return
        if block.rows_before is None:  # counted once per block, when it first looks like a bulk load
            block.rows_before = max(0, self._count() - block.rows_added)
        if loaded > block.rows_before:
            self.connection.execute(f"DROP INDEX IF EXISTS {self.table}_hnsw")
            block.index_dropped = True

    def _build_index_if_dropped(self) -> None:
        """Before the block commits: build the HNSW index the bulk load dropped, over all its rows at once."""
        if not self._block.index_dropped:
            return
        rows = self._count()
        wanted_mb = rows * (self.dimension * 4 + 1024) * 1.2 / 2**20
        memory_mb = int(min(INDEX_BUILD_MEMORY_CAP_MB, max(64, wanted_mb)))
        self.connection.execute(f"SET maintenance_work_mem = '{memory_mb}MB'")
        try:
            self.connection.execute(_create_hnsw_index(self.table, *self.hnsw))
        finally:
            self.connection.execute("RESET maintenance_work_mem")
        self._block.index_dropped = False

    @_translated
    def _delete(self, doc_ids: list[str]) -> dict[str, dict[str, int]]:
        self._begin()
        found = self.connection.execute(
            f"WITH gone AS (DELETE FROM {self.table} WHERE doc_id = ANY(%s) RETURNING doc_id, terms) "
            f"INSERT INTO {CHANGES_TABLE} (name, seq, doc_id, terms) SELECT %s, nextval(%s), doc_id, terms FROM gone "
            "RETURNING doc_id, terms",
            (doc_ids, self.table, self._sequence),
        ).fetchall()
        return dict(found)

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
        wanted = min(MAX_EF_SEARCH, max(self.min_ef_search, top_k))
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
    def _terms_after(self, position: int, batch_size: int) -> Iterator[list[tuple[str, dict[str, int]]]]:
        last = position
        while True:
            found = self.connection.execute(
                f"SELECT seq, doc_id, terms FROM {self.table} WHERE seq > %s ORDER BY seq LIMIT %s", (last, batch_size)
            ).fetchall()
            if not found:
                return
            last = found[-1][0]
            yield [(doc_id, terms) for _, doc_id, terms in found]

    @_translated
    def _deleted_after(self, position: int) -> list[str] | None:
        horizon = self.connection.execute(
            f"SELECT horizon FROM {MARKERS_TABLE} WHERE name = %s", (self.table,)
        ).fetchone()
        if horizon is None or position < horizon[0]:
            return None
        found = self.connection.execute(
            f"SELECT doc_id, terms FROM {CHANGES_TABLE} WHERE name = %s AND seq > %s ORDER BY seq",
            (self.table, position),
        ).fetchall()
        return [(doc_id, terms) for doc_id, terms in found]

    @_translated
    def _current_position(self) -> int | None:
        found = self.connection.execute(
            f"SELECT greatest((SELECT max(seq) FROM {self.table}), "
            f"(SELECT max(seq) FROM {CHANGES_TABLE} WHERE name = %s), "
            f"(SELECT horizon FROM {MARKERS_TABLE} WHERE name = %s), 0)",
            (self.table, self.table),
        ).fetchone()
        return int(found[0])

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        if self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            yield  # inside a write block: it holds the writers' lock, nothing else changes the store
            return
        self._execute_translated("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            self._execute_translated("ROLLBACK")  # read only: nothing to keep

    @_translated
    def _execute_translated(self, statement: str) -> None:
        self.connection.execute(statement)

    @_translated
    def _remove_all(self) -> None:
        self._begin()
        self.connection.execute(f"DELETE FROM {self.table}")
        # The log cannot replay a clear: every store behind this point rebuilds in full.
        self.connection.execute(f"DELETE FROM {CHANGES_TABLE} WHERE name = %s", (self.table,))
        self.connection.execute(
            f"UPDATE {MARKERS_TABLE} SET horizon = nextval(%s) WHERE name = %s", (self._sequence, self.table)
        )

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
        self._build_index_if_dropped()
        # Prune the change log to its last CHANGE_LOG_KEEP numbers (writers take turns: the sequence is ours).
        newest = self.connection.execute("SELECT last_value FROM " + self._sequence).fetchone()[0]
        horizon = max(0, int(newest) - CHANGE_LOG_KEEP)
        self.connection.execute(
            f"UPDATE {MARKERS_TABLE} SET marker = %s, horizon = greatest(horizon, %s) WHERE name = %s",
            (marker, horizon, self.table),
        )
        self.connection.execute(f"DELETE FROM {CHANGES_TABLE} WHERE name = %s AND seq <= %s", (self.table, horizon))

    @_translated
    def _commit(self) -> None:
        if self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._build_index_if_dropped()
            self.connection.execute("COMMIT")
        self._block = _WriteBlock()

    # ---- lifetime -------------------------------------------------------------------------------
    def discard(self) -> None:
        self._block = _WriteBlock()
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
            self.connection.execute(f"DELETE FROM {CHANGES_TABLE} WHERE name = %s", (self.table,))
        self.discard()


@dataclass
class _WriteBlock:
    """What the open transaction did that its commit must finish (the bulk load's index)."""

    rows_added: int = 0
    rows_before: int | None = None
    index_dropped: bool = False


def _create_hnsw_index(table: str, m: int, ef_construction: int) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding vector_ip_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )


def _source(chunk: StoredChunk) -> str | None:
    source = chunk.metadata.get("source")
    return None if source is None else str(source)


def _array(value) -> np.ndarray | None:
    if value is None:
        return None
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)
