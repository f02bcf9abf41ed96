"""Chatchat's vs_type "milvus" (and "zilliz": Milvus in Zilliz Cloud, a URI and a token).

One collection per store (``chatkb_<hash>``) with the chunk's text, metadata, search terms, unit
vector (inner product) and sequence number, a small ``<name>_marker`` collection with the change
marker, and ``<name>_deleted``, the log of deleted ids. Without a server in KBS_CONFIG.milvus, the
store is Milvus Lite in a file in the store's folder (``<kb>/vector_store/<embed_model>/milvus.db``):
the same client API, one process at a time.

Milvus has no transactions: a write block's deletes and inserts reach the server one call at a time.
A server that stops in the middle may leave that block's files half replaced in the collection; the
metadata database is only written after the block succeeds, and the next ingestion of those files
replaces their chunks (it deletes by source first), so the knowledge base heals on retry.

Change log (remote.py: other processes catch up by reading only what changed). Milvus has no
sequences, so the marker row carries the counter: ``"<random token> <last number> <horizon>"``. Every
writer of a knowledge base holds its write lock (service.writing_to: a PostgreSQL advisory lock or a
file lock) for the whole write block, so writers on every host take turns; a block numbers its rows
and logged deletions on from the counter it read and stores the new counter with the marker, last.
So every number up to a marker's counter belongs to a finished block. A reader reads the marker, then
only the rows and deletions numbered up to its counter: what it holds is then exactly some finished
state (a block still being written is read at the next catch-up), so each logged deletion it applies
is of the version it holds, and the deleted row's logged terms remove it exactly.
The horizon is where the log begins (it is pruned to LOG_KEEP numbers, and a clear starts it again);
a reader behind it rebuilds in full. A marker written before the log existed carries no counter:
readers rebuild in full once, and the first writer numbers on from the clock (the ``seq`` written
then), so old rows stay below the new numbers.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from server.knowledge_base.vector_stores.base import StoredChunk, StoreSettingsError, StoreUnavailable
from server.knowledge_base.vector_stores.remote import RemoteStore, Row

logger = logging.getLogger(__name__)

LITE_FILE = "milvus.db"
MAX_TEXT_BYTES = 65535  # Milvus's VARCHAR limit
MAX_RESULTS = 16384  # Milvus's limit on one search or query
# Ids the store makes are uuid4 strings; anything else cannot be stored here, so it is simply not found.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CONNECT_TIMEOUT_SECONDS = 10
# Sequence numbers the deletion log keeps; a reader further behind rebuilds its keyword index in full.
LOG_KEEP = 1_000_000


def client_options(settings, folder: Path) -> tuple[dict, str, bool]:
    """(MilvusClient keyword arguments, address for messages, is Milvus Lite) from a KBS_CONFIG entry."""
    if settings.uri:
        uri = settings.uri
    elif settings.host:
        uri = f"{'https' if settings.secure else 'http'}://{settings.host}:{settings.port}"
    else:
        folder.mkdir(parents=True, exist_ok=True)
        return {"uri": str(folder / LITE_FILE)}, f"Milvus Lite file {LITE_FILE}", True
    options = {"uri": uri, "timeout": CONNECT_TIMEOUT_SECONDS}
    if settings.token:
        options["token"] = settings.token
    elif settings.user:
        options["user"], options["password"] = settings.user, settings.password
    if settings.db_name:
        options["db_name"] = settings.db_name
    return options, uri.split("@")[-1], False


def _translated(method):
    def unavailable(self, exc: MilvusException) -> StoreUnavailable:
        message = getattr(exc, "message", "") or str(exc)
        first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        return StoreUnavailable(f"Milvus vector store at {self.address} failed: {first_line}")

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except MilvusException as exc:
            raise unavailable(self, exc) from exc

    @functools.wraps(method)
    def generator_wrapper(self, *args, **kwargs):  # a scan fails while it is iterated, not when called
        try:
            yield from method(self, *args, **kwargs)
        except MilvusException as exc:
            raise unavailable(self, exc) from exc

    return generator_wrapper if inspect.isgeneratorfunction(method) else wrapper


class MilvusStore(RemoteStore):
    def __init__(self, dimension: int, settings, folder: Path, name: str, vs_type: str = "milvus"):
        super().__init__(dimension)
        if vs_type == "zilliz" and not (settings.uri and settings.token):
            raise StoreSettingsError("vs_type 'zilliz' needs KBS_CONFIG.zilliz.uri and KBS_CONFIG.zilliz.token")
        options, self.address, self.lite = client_options(settings, folder)
        self.lite_path = options["uri"]
        self.name = name
        self.marker_name = f"{name}_marker"
        self.log_name = f"{name}_deleted"
        self._log_counter: int | None = None  # the marker's counter at the last read or write (None: none yet)
        self._horizon = 0  # the first number the deletion log still holds
        self._last_seq: int | None = None  # the last number this write block used (None: no block open)
        self._cleared_at = 0  # the number this write block's clear took (the log starts again after it)
        self._block_base: int | None = None  # the counter this write block numbered on from
        try:
            self.client = MilvusClient(**options)
        except MilvusException as exc:
            setting = f"KBS_CONFIG.{vs_type}"
            raise StoreUnavailable(f"cannot connect to Milvus at {self.address} ({setting}): {exc.message}") from None
        try:
            self._create_collections()
        except BaseException:
            self.discard()
            raise

    @_translated
    def _create_collections(self) -> None:
        if not self.client.has_collection(self.name):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("source_key", DataType.VARCHAR, max_length=32)
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("terms", DataType.JSON)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dimension)
            index = self.client.prepare_index_params()
            # Milvus Lite searches exhaustively (FLAT); a server picks its own index (AUTOINDEX, HNSW-like).
            index.add_index("vector", index_type="FLAT" if self.lite else "AUTOINDEX", metric_type="IP")
            if not self.lite:
                index.add_index("source_key", index_type="INVERTED")
            self.client.create_collection(self.name, schema=schema, index_params=index, consistency_level="Strong")
        else:
            field = next(f for f in self.client.describe_collection(self.name)["fields"] if f["name"] == "vector")
            stored = int(field["params"]["dim"])
            if stored != self.dimension:
                raise ValueError(
                    f"vector store {self.name} has dimension {stored}, the embedding model gives {self.dimension}: "
                    "rebuild it with init_database.py --recreate-vs"
                )
        if not self.client.has_collection(self.marker_name):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("marker", DataType.VARCHAR, max_length=64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="IP")
            self.client.create_collection(
                self.marker_name, schema=schema, index_params=index, consistency_level="Strong"
            )
        if not self.client.has_collection(self.log_name):
            schema = self.client.create_schema(auto_id=True, enable_dynamic_field=False)
            # Its own key: a write block that died is numbered again by the next one, and both entries stay.
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
            schema.add_field("terms", DataType.JSON)  # the deleted row's: other processes drop it with them
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="IP")
            self.client.create_collection(self.log_name, schema=schema, index_params=index, consistency_level="Strong")

    # ---- server primitives ------------------------------------------------------------------
    @_translated
    def _count(self) -> int:
        found = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    @_translated
    def _insert(self, rows: list[Row]) -> None:
        first = self._take_seqs(len(rows))
        data = []
        for position, (chunk, terms, vector) in enumerate(rows):
            if not _SAFE_ID.match(chunk.doc_id):
                raise ValueError(f"chunk id {chunk.doc_id!r} cannot be stored in Milvus (letters, digits, -_.: only)")
            if len(chunk.page_content.encode("utf-8")) > MAX_TEXT_BYTES:
                raise ValueError(
                    f"a chunk of {chunk.metadata.get('source')} is longer than Milvus's {MAX_TEXT_BYTES} bytes"
                )
            data.append(
                {
                    "doc_id": chunk.doc_id,
                    "seq": first + position,
                    "source_key": _source_key(chunk.metadata.get("source")),
                    "text": chunk.page_content,
                    "metadata": chunk.metadata,
                    "terms": terms,
                    "vector": vector.tolist(),
                }
            )
        for start in range(0, len(data), 1000):
            self.client.insert(self.name, data[start : start + 1000])

    @_translated
    def _delete(self, doc_ids: list[str]) -> dict[str, dict[str, int]]:
        wanted = [d for d in doc_ids if _SAFE_ID.match(d)]
        found: dict[str, dict[str, int]] = {}
        for start in range(0, len(wanted), MAX_RESULTS):
            for item in self.client.get(self.name, ids=wanted[start : start + MAX_RESULTS], output_fields=["terms"]):
                found[item["doc_id"]] = item.get("terms") or {}
        if not found:
            return {}
        self.client.delete(self.name, ids=list(found))
        # Logged after the rows go: a crash in between leaves a stale keyword entry, not a lost chunk.
        first = self._take_seqs(len(found))
        entries = [
            {"seq": first + i, "doc_id": doc_id, "terms": terms, "vector": [1.0, 0.0]}
            for i, (doc_id, terms) in enumerate(found.items())
        ]
        for start in range(0, len(entries), 1000):
            self.client.insert(self.log_name, entries[start : start + 1000])
        return found

    def _take_seqs(self, count: int) -> int:
        """The first of ``count`` new numbers for this write block's rows or logged deletions."""
        if self._last_seq is None:  # not begun by refresh(writing=True): number on from the marker now
            self._read_marker(writing=True)
        first = self._last_seq + 1
        self._last_seq += count
        return first

    @_translated
    def _fetch(self, doc_ids: list[str], with_vectors: bool) -> dict[str, Row]:
        wanted = [d for d in dict.fromkeys(doc_ids) if _SAFE_ID.match(d)]
        fields = ["doc_id", "text", "metadata", *(["vector"] if with_vectors else [])]
        rows: dict[str, Row] = {}
        for start in range(0, len(wanted), MAX_RESULTS):
            for item in self.client.get(self.name, ids=wanted[start : start + MAX_RESULTS], output_fields=fields):
                rows[item["doc_id"]] = _row(item)
        return rows

    @_translated
    def _source_ids(self, sources: list[str], limit: int | None) -> list[str]:
        keys = json.dumps([_source_key(source) for source in sources])
        query = {"filter": f"source_key in {keys}", "output_fields": ["doc_id", "seq"]}
        items = self.client.query(self.name, limit=MAX_RESULTS, **query)
        if len(items) == MAX_RESULTS:  # a huge file: page through all of it
            items = []
            iterator = self.client.query_iterator(self.name, batch_size=1000, **query)
            try:
                while batch := iterator.next():
                    items += batch
            finally:
                iterator.close()
        return [doc_id for _, doc_id in sorted((item["seq"], item["doc_id"]) for item in items)][:limit]

    @_translated
    def _nearest(self, vector: np.ndarray, top_k: int) -> list[tuple[StoredChunk, float]]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        found = self.client.search(
            self.name,
            data=[query],
            anns_field="vector",
            limit=min(top_k, MAX_RESULTS),
            output_fields=["doc_id", "text", "metadata"],
            search_params={"metric_type": "IP"},
        )
        return [(_row(hit["entity"])[0], float(hit["distance"])) for hit in found[0]]

    @_translated
    def _scan(self, batch_size: int, with_vectors: bool) -> Iterator[list[Row]]:
        fields = ["doc_id", "seq", "text", "metadata", "terms", *(["vector"] if with_vectors else [])]
        iterator = self.client.query_iterator(self.name, batch_size=batch_size, filter="", output_fields=fields)
        try:
            while batch := iterator.next():
                yield [_row(item) for item in batch]
        finally:
            iterator.close()

    @_translated
    def _terms_after(self, position: int, batch_size: int) -> Iterator[list[tuple[str, dict[str, int]]]]:
        """(doc id, terms) of the rows numbered after ``position`` (0: all); only the two fields needed.
        In pages as large as Milvus allows: Milvus Lite scans the collection for every page (reading all
        terms took 14.4 s at 80,000 rows in pages of 5,000, 8.2 s in pages of 16,384)."""
        iterator = self.client.query_iterator(
            self.name, batch_size=MAX_RESULTS, filter=self._numbered(position), output_fields=["doc_id", "terms"]
        )
        try:
            while batch := iterator.next():
                yield [(item["doc_id"], item.get("terms") or {}) for item in batch]
        finally:
            iterator.close()

    @_translated
    def _deleted_after(self, position: int) -> list[tuple[str, dict[str, int] | None]] | None:
        if self._log_counter is None or position < self._horizon:
            return None
        iterator = self.client.query_iterator(
            self.log_name, batch_size=MAX_RESULTS, filter=self._numbered(position), output_fields=["seq", "doc_id", "terms"]
        )
        deleted: list[tuple[int, str, dict[str, int] | None]] = []
        try:
            while batch := iterator.next():
                deleted += [(item["seq"], item["doc_id"], item.get("terms")) for item in batch]
        finally:
            iterator.close()
        return [(doc_id, terms) for _, doc_id, terms in sorted(deleted, key=lambda entry: entry[0])]

    def _numbered(self, position: int) -> str:
        """The filter for numbers after ``position`` (0: from the start) and up to the marker's counter."""
        bounds = [f"seq > {int(position)}"] if position else []
        if self._log_counter is not None:
            bounds.append(f"seq <= {int(self._log_counter)}")
        return " and ".join(bounds)

    def _current_position(self) -> int | None:
        # The counter read with the marker, before the rows: every number up to it was written then.
        return self._log_counter

    @_translated
    def _remove_all(self) -> None:
        self.client.delete(self.name, filter='doc_id != ""')
        # The log cannot replay a clear: it starts again after it, and readers behind rebuild in full.
        self.client.delete(self.log_name, filter="seq >= 0")
        self._cleared_at = self._take_seqs(1)

    @_translated
    def _read_marker(self, writing: bool) -> str | None:
        token, self._log_counter, self._horizon = self._stored_marker()
        if writing:  # no counter yet: number on from the clock, above the clock numbers older rows got
            self._last_seq = time.time_ns() if self._log_counter is None else self._log_counter
            self._block_base = self._log_counter
        return token

    def _stored_marker(self) -> tuple[str | None, int | None, int]:
        found = self.client.get(self.marker_name, ids=["marker"], output_fields=["marker"])
        return _parse_marker(found[0]["marker"] if found else None)

    @_translated
    def _write_marker(self, marker: str) -> None:
        if self._last_seq is None:  # nothing numbered in this block yet
            self._read_marker(writing=True)
        counter = self._last_seq
        horizon = max(self._horizon, self._cleared_at, counter - LOG_KEEP)
        # The counter moved since this block began: both blocks' numbers overlap, only a full rebuild is right.
        _, stored, _ = self._stored_marker()
        if stored != self._block_base:
            logger.warning(
                "Milvus store %s was written by another process during this write block: writers of a "
                "knowledge base must share its write lock (PostgreSQL metadata for several hosts). Every "
                "process rebuilds its keyword index from the rows at its next catch-up.",
                self.name,
            )
            counter = max(counter, stored or 0)
            horizon = counter + 1  # behind every position: all rebuild
        if horizon > self._horizon:
            self.client.delete(self.log_name, filter=f"seq < {horizon}")
        value = f"{marker} {counter} {horizon}"
        self.client.upsert(self.marker_name, [{"name": "marker", "marker": value, "vector": [1.0, 0.0]}])
        self._log_counter, self._horizon = counter, horizon

    @_translated
    def _commit(self) -> None:
        self._last_seq, self._cleared_at = None, 0
        # Every call is already applied. Milvus Lite searches rows still in its write buffer one by
        # one: sealing them after a write block made searches 13x faster (5,000 chunks: 460 -> 34 ms).
        if self.lite and self.dirty:
            self.client.flush(self.name)

    # ---- lifetime -------------------------------------------------------------------------------
    def discard(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not hide the first error
            pass

    @_translated
    def drop(self) -> None:
        for name in (self.name, self.marker_name, self.log_name):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self.discard()
        if self.lite:  # stop this file's in-process Lite server too: nothing of it is used any more
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.lite_path)


def _parse_marker(value: str | None) -> tuple[str | None, int | None, int]:
    """(token, counter, horizon) of a stored marker. A marker from before the log has only a token, and
    one that cannot be read is taken as such: readers rebuild in full, the next writer numbers afresh."""
    if value is None:
        return None, None, 0
    parts = value.split(" ")
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return value, None, 0


def _source_key(source) -> str:
    """Sources are matched by a hash: file names could not be quoted safely inside Milvus filters."""
    return hashlib.blake2b(str(source).encode("utf-8"), digest_size=16).hexdigest()


def _row(item: dict) -> Row:
    vector = item.get("vector")
    chunk = StoredChunk(item["doc_id"], item.get("text", ""), item.get("metadata") or {})
    return chunk, item.get("terms") or {}, None if vector is None else np.asarray(vector, dtype=np.float32)
