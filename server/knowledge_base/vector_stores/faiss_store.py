"""A FAISS store whose saves write only what changed, with chunk texts on disk, not in memory.

On disk, in one folder per (knowledge base, embedding model):
  store.sqlite        the truth (SQLite in WAL mode): every chunk's text, metadata, keyword terms (with
                      their counts) and float32 vector, tagged with the ``seq`` of the save that wrote it;
                      tombstones (``removed``) of chunks deleted since the last snapshot; ``meta``
  index.<seq>.faiss   a snapshot of the FAISS index as it was after save ``seq`` (inner product over
                      unit vectors, int64 ids); at most one is kept
  keywords.<seq>.npz  the keyword (BM25) index at the same save: numpy arrays (np.load without pickle)
  CURRENT             the last committed seq: a cheap hint that lets other processes notice a change

Writing: add/delete change the FAISS index and the keyword index in memory at once, and their rows
in an open SQLite transaction (reads through the same connection see them). ``save`` commits it and
bumps ``seq``: the bytes written are those of the change, not of the store. Then it writes CURRENT.
A crash or kill at any point leaves the last commit; a CURRENT that lags behind it only makes other
processes notice the change later. ``discard`` rolls the transaction back.

Loading: the FAISS and keyword indexes come from the newest snapshot not newer than the commit, then
replay what came after it (tombstones removed, newer rows added); without a usable snapshot they are
built from the rows (the keyword index alone from the stored terms, when only its snapshot is missing
or unreadable: at 1,000,000 chunks that was most of a 157 s load). A new snapshot is written (and
tombstones it covers pruned) only when the replay has grown past max(SNAPSHOT_MIN_CHANGES,
SNAPSHOT_SHARE of the store), when the index is IVF (whose training is costly) and no IVF snapshot
exists, or when the index snapshot has no keyword snapshot: snapshot writes stay linear over a
store's life.
Another process's commits are caught up the same way (``refresh``), rows newer than ours.

Memory: the FAISS index and the keyword (BM25) postings (nothing is tokenized again at load unless
the tokenizer changed). Texts, metadata and doc ids stay in SQLite and are read on demand. Nothing is unpickled, so a file a client managed to write cannot run code.

Stores saved by earlier versions (docs.<gen>.json, index.<gen>.faiss, keywords.<gen>.json) are
converted in place at their first load; their files go only after the new database is committed.

Scores: score = (1 - cosine) / 2, so 0 means identical and 1 opposite; a hit is kept when
score <= score_threshold (the default threshold 1.0 keeps everything).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import sqlite3
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import faiss
import numpy as np
from filelock import FileLock

from server.knowledge_base.paths import file_identity
from server.knowledge_base.keyword_index import BM25Index, KeywordHit, tokenize
from server.knowledge_base.vector_stores.base import (  # noqa: F401 (re-exported: older imports name this module)
    ScoredChunk,
    StoreCorrupted,
    StoredChunk,
    StoreSaveFailed,
    VectorStore,
    similarity_to_score,
    unit_rows,
)

CURRENT_FILE = "CURRENT"
DB_FILE = "store.sqlite"
SNAPSHOT = re.compile(r"^index\.(\d+)\.faiss$")
KEYWORD_SNAPSHOT = re.compile(r"^keywords\.(\d+)\.npz$")
FORMAT_VERSION = 2
# Bump when tokenize() changes, so stores saved with the old terms rebuild them on load.
TOKENIZER_VERSION = 1
# A snapshot is written once the changes replayed on top of the last one pass both of these.
SNAPSHOT_MIN_CHANGES = 20_000
SNAPSHOT_SHARE = 0.25
BATCH = 900  # ids per "IN (...)" query, under SQLite's limit on parameters
# The files of one generation in the layout before store.sqlite, by kind.
OLD_GENERATION_FILES = {"docs": "json", "index": "faiss", "keywords": "json"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    int_id INTEGER PRIMARY KEY, doc_id TEXT UNIQUE NOT NULL, source TEXT, text TEXT NOT NULL,
    metadata TEXT NOT NULL, terms TEXT, vector BLOB NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks (source, int_id);
CREATE INDEX IF NOT EXISTS chunks_by_seq ON chunks (seq);
CREATE TABLE IF NOT EXISTS removed (int_id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, terms TEXT);
CREATE INDEX IF NOT EXISTS removed_by_seq ON removed (seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""

logger = logging.getLogger(__name__)


class FaissStore(VectorStore):
    def __init__(self, dimension: int, _db: sqlite3.Connection | None = None, _folder: Path | None = None):
        """An empty store in memory; ``load`` opens a saved one (the private arguments are its own)."""
        self.dimension = dimension
        self.folder = _folder  # where store.sqlite lives; None: in memory until the first save
        self._db = _db if _db is not None else _connect(":memory:")
        self._db_file = file_identity(_folder / DB_FILE) if _folder is not None else None
        self.index = _flat_index(dimension)
        self.keywords = BM25Index(keep_terms=False)  # keyed by the same int ids as the FAISS index
        self.generation = 0  # the last seq this store has seen committed
        self.dirty = False
        self.keywords_rebuilt = False  # loaded with terms of another tokenizer: remade on load, saved next
        self._next_id = 0
        self._pending_seq = 1  # the seq the open transaction's rows get
        self._snapshot_seq: int | None = None  # the snapshot the index in memory grew from (None: rows)
        self._snapshot_ivf = False
        self._keyword_snapshot_missing = False  # the index snapshot has no keyword one (saved before them)
        self._since_snapshot = 0  # vectors added or removed since that snapshot
        # False after clear(): a rebuild (recreate) writes its rows to SQLite only, and the FAISS and
        # keyword indexes are made from the rows at the first read, so ingestion's memory does not grow
        # with the corpus (the vectors and postings of every chunk would otherwise stay in RAM).
        self._indexes_built = True

    # ---- reading -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index.ntotal) if self._indexes_built else self._row_count()

    def search(self, vector: np.ndarray, top_k: int, score_threshold: float = 1.0) -> list[ScoredChunk]:
        if not len(self) or top_k <= 0:
            return []
        self._ensure_indexes()
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = _ivf_settings()[1]
        similarities, ids = self.index.search(query, min(top_k, len(self)))
        kept = [
            (int(int_id), similarity_to_score(float(similarity)))
            for similarity, int_id in zip(similarities[0], ids[0], strict=True)
            if int_id >= 0
        ]
        chunks = self._chunks_by_int_id([int_id for int_id, _ in kept])
        return [
            ScoredChunk(chunks[int_id], score)
            for int_id, score in kept
            if int_id in chunks and score <= score_threshold
        ]

    def keyword_search(self, query_terms: list[str], top_k: int) -> list[tuple[StoredChunk, float]]:
        """The chunks with the best BM25 score for the query terms, best first."""
        self._ensure_indexes()
        hits: list[KeywordHit] = self.keywords.search(query_terms, top_k)
        chunks = self._chunks_by_int_id([hit.key for hit in hits])
        return [(chunks[hit.key], hit.score) for hit in hits if hit.key in chunks]

    def keyword_scores(self, query_terms: list[str], doc_ids: list[str]) -> list[float]:
        self._ensure_indexes()
        int_ids = self._int_ids(doc_ids)
        return self.keywords.scores(query_terms, [int_ids.get(d, -1) for d in doc_ids])

    def similarities(self, vector: np.ndarray, doc_ids: list[str]) -> np.ndarray:
        """Cosine similarity of the query vector to each stored chunk (vectors are unit length)."""
        if not doc_ids:
            return np.zeros(0, dtype=np.float32)
        self._ensure_indexes()
        known = self._int_ids(doc_ids)
        int_ids = np.array([known[d] for d in doc_ids], dtype=np.int64)
        return self.index.reconstruct_batch(int_ids) @ np.asarray(vector, dtype=np.float32).reshape(-1)

    def get(self, doc_ids: list[str]) -> list[StoredChunk]:
        found: dict[str, StoredChunk] = {}
        for batch in _batches(list(dict.fromkeys(doc_ids))):
            rows = self._db.execute(
                f"SELECT doc_id, text, metadata FROM chunks WHERE doc_id IN ({_marks(batch)})", batch
            )
            found.update((doc_id, StoredChunk(doc_id, text, json.loads(meta))) for doc_id, text, meta in rows)
        return [found[d] for d in doc_ids if d in found]

    def texts_and_vectors(self, sources: set[str], limit: int | None = None) -> tuple[list[str], np.ndarray]:
        """The stored text and vector of the chunks whose source is one of ``sources`` (at most ``limit``)."""
        texts, vectors = [], []
        for source in sources:
            left = -1 if limit is None else limit - len(texts)
            if left == 0:
                break
            rows = self._db.execute(
                "SELECT text, vector FROM chunks WHERE source IS ? ORDER BY int_id LIMIT ?", (source, left)
            )
            for text, vector in rows:
                texts.append(text)
                vectors.append(np.frombuffer(vector, dtype=np.float32))
        if not texts:
            return [], np.zeros((0, self.dimension), dtype=np.float32)
        return texts, np.stack(vectors)

    def ids_for_source(self, source: str) -> list[str]:
        rows = self._db.execute("SELECT doc_id FROM chunks WHERE source IS ? ORDER BY int_id", (source,))
        return [doc_id for (doc_id,) in rows]

    def export(self, batch_size: int = 1000) -> Iterator[tuple[list[StoredChunk], np.ndarray]]:
        last = -1
        while True:
            rows = self._db.execute(
                "SELECT int_id, doc_id, text, metadata, vector FROM chunks WHERE int_id > ? ORDER BY int_id LIMIT ?",
                (last, batch_size),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            chunks = [StoredChunk(doc_id, text, json.loads(meta)) for _, doc_id, text, meta, _ in rows]
            yield chunks, np.stack([np.frombuffer(row[4], dtype=np.float32) for row in rows])

    def sources(self) -> dict[str, list[str]]:
        """Every source file's chunk ids, in insertion order."""
        found: dict[str, list[str]] = {}
        for source, doc_id in self._db.execute("SELECT source, doc_id FROM chunks ORDER BY int_id"):
            found.setdefault(source, []).append(doc_id)
        return found

    def stale_keyword_ids(self) -> list[str]:
        """Chunks whose stored keyword terms are not what their text gives (a damaged or mismatched store)."""
        stale = []
        for doc_id, text, terms in self._db.execute("SELECT doc_id, text, terms FROM chunks ORDER BY int_id"):
            if _terms(terms) != Counter(tokenize(text)):
                stale.append(doc_id)
        return stale

    def reindex_keywords(self, doc_ids: list[str]) -> None:
        """Make these chunks' keyword terms again from their stored text; the vectors stay as they are.
        Each is stored again under a new int id, so other processes catch the change up like any other."""
        for batch in _batches(doc_ids):
            chunks = self.get(batch)
            if chunks:
                _, vectors = self._vectors_of([c.doc_id for c in chunks])
                self.add(chunks, vectors)

    def _chunks_by_int_id(self, int_ids: list[int]) -> dict[int, StoredChunk]:
        found = {}
        for batch in _batches(int_ids):
            rows = self._db.execute(
                f"SELECT int_id, doc_id, text, metadata FROM chunks WHERE int_id IN ({_marks(batch)})", batch
            )
            found.update((i, StoredChunk(doc_id, text, json.loads(meta))) for i, doc_id, text, meta in rows)
        return found

    def _int_ids(self, doc_ids: list[str]) -> dict[str, int]:
        found = {}
        for batch in _batches(list(dict.fromkeys(doc_ids))):
            rows = self._db.execute(f"SELECT doc_id, int_id FROM chunks WHERE doc_id IN ({_marks(batch)})", batch)
            found.update(rows)
        return found

    def _vectors_of(self, doc_ids: list[str]) -> tuple[list[str], np.ndarray]:
        found = {}
        for batch in _batches(doc_ids):
            rows = self._db.execute(f"SELECT doc_id, vector FROM chunks WHERE doc_id IN ({_marks(batch)})", batch)
            found.update((doc_id, np.frombuffer(vector, dtype=np.float32)) for doc_id, vector in rows)
        ids = [d for d in doc_ids if d in found]
        return ids, np.stack([found[d] for d in ids]) if ids else np.zeros((0, self.dimension), np.float32)

    # ---- writing -----------------------------------------------------------------
    def add(self, chunks: list[StoredChunk], vectors: np.ndarray) -> list[str]:
        vectors = unit_rows(vectors, len(chunks), self.dimension)
        for chunk in chunks:
            chunk.doc_id = chunk.doc_id or str(uuid.uuid4())
        if not chunks:
            return []
        terms = [dict(Counter(tokenize(chunk.page_content))) for chunk in chunks]  # before taking the write lock
        with _sqlite_errors_as_save_failures():
            self._begin()
            self.delete([chunk.doc_id for chunk in chunks])
            seq = self._pending_seq
            int_ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
            self._db.executemany(
                "INSERT INTO chunks (int_id, doc_id, source, text, metadata, terms, vector, seq) VALUES (?,?,?,?,?,?,?,?)",
                (
                    (
                        int(i),
                        c.doc_id,
                        _source(c.metadata),
                        c.page_content,
                        _json(c.metadata),
                        _json(t),
                        v.tobytes(),
                        seq,
                    )
                    for i, c, t, v in zip(int_ids, chunks, terms, vectors, strict=True)
                ),
            )
        self._next_id += len(chunks)
        self._since_snapshot += len(chunks)
        self.dirty = True
        if self._indexes_built:
            self.index.add_with_ids(vectors, int_ids)
            for int_id, counts in zip(int_ids, terms, strict=True):
                self.keywords.add(int(int_id), counts)
            self._switch_to_ivf_if_big()
        return [chunk.doc_id for chunk in chunks]

    def delete(self, doc_ids: list[str]) -> int:
        removed = 0
        for batch in _batches(list(dict.fromkeys(doc_ids))):
            query = f"SELECT int_id, terms FROM chunks WHERE doc_id IN ({_marks(batch)})"
            if not self._db.execute(query, batch).fetchone():
                continue  # nothing to delete: no write transaction (it would hold SQLite's write lock)
            with _sqlite_errors_as_save_failures():
                self._begin()  # may catch up with another process first: select again
                rows = self._db.execute(query, batch).fetchall()
                int_ids = [int_id for int_id, _ in rows]
                self._db.execute(f"DELETE FROM chunks WHERE int_id IN ({_marks(int_ids)})", int_ids)
                self._db.executemany(
                    "INSERT OR REPLACE INTO removed (int_id, seq, terms) VALUES (?, ?, ?)",
                    ((int_id, self._pending_seq, terms) for int_id, terms in rows),
                )
            self._forget(rows)
            removed += len(rows)
        return removed

    def _forget(self, rows: Iterable[tuple[int, str | None]]) -> None:
        """Take these (int id, stored terms) out of the FAISS and keyword indexes in memory."""
        rows = list(rows)
        if self._indexes_built:
            self.index.remove_ids(np.array([int_id for int_id, _ in rows], dtype=np.int64))
            for int_id, terms in rows:
                self.keywords.remove(int_id, _terms(terms))
        self._since_snapshot += len(rows)
        self.dirty = True

    def clear(self) -> None:
        removed = len(self)
        with _sqlite_errors_as_save_failures():
            self._begin()
            self._db.execute(
                "INSERT OR REPLACE INTO removed (int_id, seq, terms) SELECT int_id, ?, terms FROM chunks",
                (self._pending_seq,),
            )
            self._db.execute("DELETE FROM chunks")
        self._since_snapshot += removed
        self.index = _flat_index(self.dimension)
        self.keywords.clear()
        self._indexes_built = False
        self.dirty = True

    def _begin(self) -> None:
        """Open the write transaction if none is open, first catching up with commits made meanwhile."""
        if self._db.in_transaction:
            return
        self._db.execute("BEGIN IMMEDIATE")  # the write lock, now: nobody commits between us and our save
        committed = _meta(self._db, "seq", 0)
        if committed > self.generation:
            self._catch_up(committed)
        self._pending_seq = max(committed, self.generation) + 1

    # ---- disk --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Commit the changes since the last save as one new seq; on failure StoreSaveFailed is raised and
        nothing of them is on disk (the store in memory is unchanged and still dirty)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.folder is None or Path(self.folder).resolve() != folder.resolve():
            self._move_to(folder)
        try:
            with _sqlite_errors_as_save_failures():
                self._begin()
                self._set_meta(seq=self._pending_seq, next_id=self._next_id)
                self._rewrite_stale_terms()
                self._db.commit()
        except StoreSaveFailed:
            if not self.dirty:  # only this save's own writes were pending: do not hold the write lock
                self._db.rollback()
            raise
        self.generation = self._pending_seq
        self.dirty = False
        self.keywords_rebuilt = False
        # Past the commit the save has happened: what follows only speeds up later loads and tells
        # other processes, so a failure (disk full) is logged, not raised.
        try:
            if self._snapshot_due():
                self._write_snapshot(folder)
            elif not self._indexes_built:  # cleared since: a snapshot would only be replayed away
                for _, path in _all_snapshots(folder):
                    path.unlink(missing_ok=True)
            _write_durably(folder / CURRENT_FILE, str(self.generation).encode())
            _remove_leftovers(folder)  # only a writer (holding the folder's lock) removes temporary files
        except (OSError, sqlite3.Error) as exc:
            logger.warning("vector store in %s saved, but writing its snapshot or CURRENT failed: %s", folder, exc)

    def _set_meta(self, **values) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    def _rewrite_stale_terms(self) -> None:
        """Store the terms remade on load (another tokenizer version), so later loads need not remake them."""
        if _meta(self._db, "tokenizer", TOKENIZER_VERSION) == TOKENIZER_VERSION:
            return
        last = -1
        while rows := self._db.execute(
            "SELECT int_id, text FROM chunks WHERE int_id > ? ORDER BY int_id LIMIT 1000", (last,)
        ).fetchall():
            last = rows[-1][0]
            self._db.executemany(
                "UPDATE chunks SET terms = ? WHERE int_id = ?",
                ((_json(dict(Counter(tokenize(text)))), int_id) for int_id, text in rows),
            )
        self._set_meta(tokenizer=TOKENIZER_VERSION)

    def _move_to(self, folder: Path) -> None:
        """The first save of a store made in memory (or saved elsewhere): its rows replace whatever the folder's
        database holds, as one change (tombstones for the old rows, the new rows under the next seq)."""
        target = _connect(str(folder / DB_FILE))
        try:
            with _sqlite_errors_as_save_failures():
                target.execute("BEGIN IMMEDIATE")
                seq = _meta(target, "seq", 0) + 1
                target.execute(
                    "INSERT OR REPLACE INTO removed (int_id, seq, terms) SELECT int_id, ?, terms FROM chunks", (seq,)
                )
                target.execute("DELETE FROM chunks")
                columns = "int_id, doc_id, source, text, metadata, terms, vector"
                rows = self._db.execute(f"SELECT {columns} FROM chunks ORDER BY int_id")
                target.executemany(f"INSERT INTO chunks ({columns}, seq) VALUES (?,?,?,?,?,?,?,{seq})", rows)
                next_id = max(self._next_id, _meta(target, "next_id", 0))
                tokenizer = _meta(self._db, "tokenizer", TOKENIZER_VERSION)
                target.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    {"format": FORMAT_VERSION, "dimension": self.dimension, "tokenizer": tokenizer}.items(),
                )
        except BaseException:
            target.close()
            raise
        self._db.close()  # the rows were read through it, pending ones included: they live on in the target
        self._db, self.folder = target, folder
        self._db_file = file_identity(folder / DB_FILE)
        self._next_id, self.generation, self._pending_seq = next_id, seq - 1, seq
        self._snapshot_seq, self._since_snapshot = None, len(self)

    def _snapshot_due(self) -> bool:
        if not self._indexes_built:
            return False  # made at a later save, once a read has built the indexes
        if (isinstance(self.index, faiss.IndexIVF) and not self._snapshot_ivf) or self._keyword_snapshot_missing:
            return True
        return self._since_snapshot > max(SNAPSHOT_MIN_CHANGES, SNAPSHOT_SHARE * len(self))

    def _write_snapshot(self, folder: Path) -> None:
        """The index as of the last commit; then the older snapshots and the tombstones it covers go."""
        seq = self.generation
        _write_durably(folder / f"index.{seq}.faiss", faiss.serialize_index(self.index).tobytes())
        keywords = io.BytesIO()
        np.savez(keywords, tokenizer=np.array([TOKENIZER_VERSION]), **self.keywords.to_arrays())
        _write_durably(folder / f"keywords.{seq}.npz", keywords.getvalue())
        del keywords
        self._snapshot_seq, self._snapshot_ivf = seq, isinstance(self.index, faiss.IndexIVF)
        self._keyword_snapshot_missing = False
        self._since_snapshot = 0
        try:  # one transaction of its own (seq does not change); 'pruned' first, so readers never miss it
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('pruned', ?)", (seq,))
            self._db.execute("DELETE FROM removed WHERE seq <= ?", (seq,))
            self._db.commit()
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.rollback()  # never keep the write lock after a save
            raise
        for old, path in _all_snapshots(folder):
            if old != seq:
                path.unlink(missing_ok=True)

    def refresh(self, writing: bool = False) -> None:
        """Catch up with what other processes committed since this store last looked (rows newer than ours)."""
        if self.folder is None or self._db.in_transaction:
            return
        with _sqlite_errors_as_save_failures():
            self._db.execute("BEGIN")  # one consistent view for all the reads
            try:
                committed = _meta(self._db, "seq", 0)
                if committed > self.generation:
                    self._catch_up(committed)
            finally:
                self._db.rollback()

    def _catch_up(self, committed: int) -> None:
        previous, self.generation = self.generation, committed
        self._next_id = max(self._next_id, _meta(self._db, "next_id", 0))  # their ids are taken
        if not self._indexes_built:
            return  # the first read builds the indexes from the rows, theirs included
        if previous < _meta(self._db, "pruned", 0):  # the tombstones we need are gone: rebuild
            self._build_memory()
        else:
            self._replay_after(previous)

    def replaced_on_disk(self) -> bool:
        """Whether the folder's store.sqlite is no longer the file this store has open (deleted, made again)."""
        try:
            stat = (self.folder / DB_FILE).stat()
        except (OSError, TypeError):
            return True
        return (stat.st_dev, stat.st_ino) != self._db_file

    def discard(self) -> None:
        """Drop uncommitted changes and close the database; the store is not used afterwards."""
        try:
            if self._db.in_transaction:
                self._db.rollback()
            self._db.close()
        except sqlite3.Error as exc:
            logger.warning("could not close the vector store database in %s: %s", self.folder, exc)

    def finish_rebuild(self) -> bool:
        """Past FAISS_IVF_THRESHOLD the index is trained now and saved as a snapshot at the next save:
        without one, every process loading the store would train it again (minutes at a million)."""
        if self._indexes_built or self._row_count() <= _ivf_settings()[0]:
            return False  # a flat index is made from the rows at the first read, quickly
        self._ensure_indexes()
        return True

    @classmethod
    def load(cls, folder: Path) -> FaissStore:
        if not (folder / DB_FILE).exists():
            if read_generation(folder) == 0:
                raise FileNotFoundError(f"no vector store saved in {folder}")
            _convert_old_layout(folder)
        try:
            db = _connect(str(folder / DB_FILE), create=False)
        except sqlite3.Error as exc:
            raise StoreCorrupted(f"vector store in {folder} cannot be read: {exc}") from exc
        try:
            db.execute("BEGIN")
            try:
                seq = _meta(db, "seq", 0)
                if seq:  # 0: made, but its first save never committed
                    store = cls(int(_meta(db, "dimension", 0)), db, folder)
                    store.generation, store._next_id = seq, _meta(db, "next_id", 0)
                    store._build_memory()
            finally:
                db.rollback()
        except (sqlite3.Error, ValueError, RuntimeError) as exc:
            db.close()
            raise StoreCorrupted(f"vector store in {folder} cannot be read: {exc}") from exc
        if not seq:
            db.close()
            raise FileNotFoundError(f"no vector store saved in {folder}")
        return store

    def _build_memory(self) -> None:
        """The FAISS and keyword indexes of the committed rows: a snapshot plus what came after it, or all rows."""
        self.keywords.clear()
        self.keywords_rebuilt = _meta(self._db, "tokenizer", TOKENIZER_VERSION) != TOKENIZER_VERSION
        snapshot = self._read_snapshot()
        if snapshot is not None:
            self._snapshot_seq, self.index = snapshot
            self._snapshot_ivf = isinstance(self.index, faiss.IndexIVF)
            self._since_snapshot = 0
            keywords = self._read_keyword_snapshot(self._snapshot_seq)
            self._keyword_snapshot_missing = keywords is None and not self.keywords_rebuilt
            if keywords is not None:
                self.keywords = keywords
                self._replay_after(self._snapshot_seq)
            else:
                self._replay_after(self._snapshot_seq, with_keywords=False)
                self._load_keywords()
            rows = self._row_count()
            if self.index.ntotal == rows == len(self.keywords):
                return
            logger.warning("vector store in %s: snapshot %s does not match the rows, rebuilt", self.folder, snapshot[0])
            self.keywords.clear()
        self._rebuild_from_rows()

    def _ensure_indexes(self) -> None:
        if not self._indexes_built:
            logger.info("vector store in %s: building its indexes from %d stored chunks", self.folder, len(self))
            self.keywords.clear()
            self.keywords_rebuilt = False  # rows written since clear() carry the current tokenizer's terms
            self._rebuild_from_rows()

    def _rebuild_from_rows(self) -> None:
        self._snapshot_seq, self._snapshot_ivf, self.index = None, False, _flat_index(self.dimension)
        self._since_snapshot = 0
        self._indexes_built = True
        self._replay_after(-1)
        self._since_snapshot = len(self)

    def _read_snapshot(self) -> tuple[int, faiss.Index] | None:
        """The newest readable snapshot between the last pruning and the committed seq, with its seq."""
        if self.folder is None:
            return None
        pruned = _meta(self._db, "pruned", 0)
        for seq, path in sorted(_snapshots(self.folder), reverse=True):
            if not pruned <= seq <= self.generation:
                continue
            try:
                index = faiss.deserialize_index(np.frombuffer(path.read_bytes(), dtype=np.uint8))
            except (OSError, RuntimeError, ValueError) as exc:
                logger.warning("vector store snapshot %s unreadable (%s): rebuilding from the rows", path, exc)
                continue
            if index.d == self.dimension:
                return seq, index
        return None

    def _read_keyword_snapshot(self, seq: int) -> BM25Index | None:
        """The keyword index saved with snapshot ``seq``; None when missing, unreadable or made by another
        tokenizer (then it is built from the stored terms)."""
        if self.keywords_rebuilt:
            return None
        path = self.folder / f"keywords.{seq}.npz"
        try:
            with np.load(path, allow_pickle=False) as arrays:
                if int(arrays["tokenizer"][0]) != TOKENIZER_VERSION:
                    return None
                return BM25Index.from_arrays(arrays)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            logger.warning("keyword snapshot %s unreadable (%s): rebuilding it from the stored terms", path, exc)
            return None

    def _replay_after(self, seq: int, with_keywords: bool = True) -> None:
        """Apply the tombstones and rows committed after ``seq`` to the indexes in memory."""
        removed = self._db.execute("SELECT int_id, terms FROM removed WHERE seq > ?", (seq,)).fetchall()
        if removed:
            present = [(i, t) for i, t in removed if not with_keywords or i in self.keywords]
            self.index.remove_ids(np.array([i for i, _ in removed], dtype=np.int64))
            if with_keywords:
                for int_id, terms in present:
                    self.keywords.remove(int_id, _terms(terms))
            self._since_snapshot += len(removed)
        last = -1
        text_column = self._text_column()
        while rows := self._db.execute(
            f"SELECT int_id, terms, {text_column}, vector FROM chunks WHERE seq > ? AND int_id > ? ORDER BY int_id LIMIT 5000",
            (seq, last),
        ).fetchall():
            last = rows[-1][0]
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            vectors = np.stack([np.frombuffer(row[3], dtype=np.float32) for row in rows])
            self.index.add_with_ids(vectors, ids)
            if with_keywords:
                for int_id, terms, text, _ in rows:
                    self.keywords.add(int_id, self._stored_or_new_terms(terms, text))
            self._since_snapshot += len(rows)
        self._switch_to_ivf_if_big()

    def _switch_to_ivf_if_big(self) -> None:
        if not isinstance(self.index, faiss.IndexIVF) and self.index.ntotal > _ivf_settings()[0]:
            self.index = _ivf_index_from(self.index)

    def _load_keywords(self) -> None:
        last = -1
        text_column = self._text_column()
        while rows := self._db.execute(
            f"SELECT int_id, terms, {text_column} FROM chunks WHERE int_id > ? ORDER BY int_id LIMIT 5000", (last,)
        ).fetchall():
            last = rows[-1][0]
            for int_id, terms, text in rows:
                self.keywords.add(int_id, self._stored_or_new_terms(terms, text))

    def _text_column(self) -> str:
        """The texts are read only when their terms must be made again (another tokenizer version)."""
        return "text" if self.keywords_rebuilt else "NULL"

    def _stored_or_new_terms(self, terms: str | None, text: str | None) -> dict[str, int]:
        if self.keywords_rebuilt:
            return dict(Counter(tokenize(text)))
        return _terms(terms)

    def _row_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]


def _connect(path: str, create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode: the store opens (BEGIN) and ends its transactions itself."""
    if not create and not Path(path).exists():
        raise FileNotFoundError(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when save() returns
    db.executescript(SCHEMA)
    return db




def _meta(db: sqlite3.Connection, key: str, default: int) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None or row[0] is None else int(row[0])


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _terms(stored: str | None) -> dict[str, int]:
    return json.loads(stored) if stored else {}


def _source(metadata: dict):
    source = metadata.get("source")
    return source if source is None or isinstance(source, str | int | float) else str(source)


def _marks(values: list) -> str:
    return ",".join("?" * len(values))


def _batches(values: list) -> Iterator[list]:
    for start in range(0, len(values), BATCH):
        yield values[start : start + BATCH]


def _flat_index(dimension: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


class _sqlite_errors_as_save_failures:  # noqa: N801 (used as a context manager)
    """SQLite's disk-full and I/O errors become StoreSaveFailed: the client gets the same clear answer as
    for any failed save. The caller's transaction is left to the cache, which drops (rolls back) the store."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc)
            code = errno.ENOSPC if "full" in message else errno.EBUSY if "locked" in message else errno.EIO
            raise StoreSaveFailed(OSError(code, os.strerror(code))) from exc
        return False


def _ivf_settings() -> tuple[int, int]:
    from configs import get_settings

    settings = get_settings()
    return settings.FAISS_IVF_THRESHOLD, settings.FAISS_IVF_NPROBE


def _ivf_index_from(flat: faiss.IndexIDMap2) -> faiss.IndexIVFFlat:
    """The same vectors and ids in an inverted-file index: exact search reads every vector, so past
    FAISS_IVF_THRESHOLD chunks a query only reads the FAISS_IVF_NPROBE nearest of ~sqrt(n) lists.
    (IVF rather than HNSW: FAISS's HNSW cannot remove vectors, and re-ingesting a file removes its chunks.)
    sqrt(n) rather than the often quoted 4*sqrt(n): k-means costs samples x lists, and the samples grow
    with the lists, so 4x the lists is 16x the training (minutes at a million chunks on two cores),
    while a query reading 32 of 1,000 lists still touches only 3% of the vectors."""
    total = flat.ntotal
    vectors = flat.index.reconstruct_n(0, total)
    ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
    lists = max(1, int(np.sqrt(total)))
    logger.info("FAISS store of %d chunks: building an IVF index with %d lists", total, lists)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(flat.d), flat.d, lists, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(total, min(total, 64 * lists), replace=False)
    index.train(vectors[np.sort(sample)])
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # lets vectors be read back and removed by id
    index.add_with_ids(vectors, ids)
    return index


def _all_snapshots(folder: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every index and keyword snapshot in the folder."""
    return _snapshots(folder) + _snapshots(folder, KEYWORD_SNAPSHOT)


def _snapshots(folder: Path, pattern: re.Pattern = SNAPSHOT) -> list[tuple[int, Path]]:
    found = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found


def read_generation(folder: Path) -> int:
    """The last committed seq as CURRENT says (monotonic), 0 when nothing was saved yet."""
    try:
        return int((folder / CURRENT_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        pass
    if not (folder / DB_FILE).exists():
        return 0
    try:  # committed, then killed before CURRENT was first written
        db = sqlite3.connect(f"file:{folder / DB_FILE}?mode=ro", uri=True)
        try:
            return _meta(db, "seq", 0)
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a failed write (disk full) must not leave its partial copy
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove_leftovers(folder: Path) -> None:
    """Temporary files of saves that were killed, and files of the old layout a conversion left behind."""
    for path in folder.iterdir():
        parts = path.name.split(".")
        old_file = len(parts) == 3 and parts[0] in ("docs", "keywords") and parts[1].isdigit() and parts[2] == "json"
        leftover_temporary = path.name.startswith(".") and path.name.endswith(".tmp")
        if old_file or leftover_temporary:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("could not remove %s: %s", path, exc)


# ---- the layout before store.sqlite ---------------------------------------------------
def _convert_old_layout(folder: Path) -> None:
    """Turn docs/index/keywords.<gen> files into store.sqlite (seq gen + 1) and a snapshot; the old files go
    only once the database is committed and in place. One process converts; the others wait for it."""
    with FileLock(str(folder / ".convert.lock")):
        if (folder / DB_FILE).exists():
            return
        generation = read_generation(folder)
        docs, index, terms = _read_old_generation(folder, generation)
        seq = generation + 1
        temporary = folder / f".{DB_FILE}.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        try:
            _write_converted(temporary, docs, index, terms, seq)
            os.replace(temporary, folder / DB_FILE)
            _sync_folder(folder)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        try:
            _write_durably(folder / f"index.{seq}.faiss", faiss.serialize_index(index).tobytes())
            _write_durably(folder / CURRENT_FILE, str(seq).encode())
        except OSError as exc:  # only shortcuts: the database is the store
            logger.warning("converted vector store in %s, but writing its snapshot failed: %s", folder, exc)
        for kind, suffix in OLD_GENERATION_FILES.items():
            (folder / f"{kind}.{generation}.{suffix}").unlink(missing_ok=True)
    logger.info("vector store in %s converted to %s (seq %d)", folder, DB_FILE, seq)


def _read_old_generation(folder: Path, generation: int) -> tuple[dict, faiss.Index, dict[int, dict] | None]:
    try:
        docs = json.loads((folder / f"docs.{generation}.json").read_text(encoding="utf-8"))
        raw_index = np.frombuffer((folder / f"index.{generation}.faiss").read_bytes(), dtype=np.uint8)
        index = faiss.deserialize_index(raw_index)
    except (OSError, ValueError, RuntimeError) as exc:
        raise StoreCorrupted(f"vector store in {folder} (generation {generation}) cannot be read: {exc}") from exc
    if index.ntotal != len(docs["chunks"]):
        raise StoreCorrupted(f"vector store in {folder}: {index.ntotal} vectors but {len(docs['chunks'])} documents")
    try:
        saved = json.loads((folder / f"keywords.{generation}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return docs, index, None
    except (OSError, ValueError) as exc:
        raise StoreCorrupted(f"keyword index of {folder} cannot be read: {exc}") from exc
    if saved.get("tokenizer") != TOKENIZER_VERSION:
        return docs, index, None
    return docs, index, {int(key): counts for key, counts in saved["terms"].items()}


def _write_converted(path: Path, docs: dict, index: faiss.Index, terms: dict[int, dict] | None, seq: int) -> None:
    db = _connect(str(path))
    try:
        db.execute("BEGIN")
        for start in range(0, len(docs["chunks"]), 1000):
            items = docs["chunks"][start : start + 1000]
            ids = np.array([int(item["int_id"]) for item in items], dtype=np.int64)
            vectors = index.reconstruct_batch(ids) if len(ids) else []
            db.executemany(
                "INSERT INTO chunks (int_id, doc_id, source, text, metadata, terms, vector, seq) VALUES (?,?,?,?,?,?,?,?)",
                (
                    (
                        int(item["int_id"]),
                        item["id"],
                        _source(item.get("metadata") or {}),
                        item["text"],
                        _json(item.get("metadata") or {}),
                        _json(terms.get(int(item["int_id"]), {})) if terms is not None else None,
                        np.asarray(vector, dtype=np.float32).tobytes(),
                        seq,
                    )
                    for item, vector in zip(items, vectors, strict=True)
                ),
            )
        meta = {
            "format": FORMAT_VERSION,
            "dimension": int(docs["dimension"]),
            "next_id": int(docs["next_id"]),
            "seq": seq,
            "tokenizer": TOKENIZER_VERSION if terms is not None else 0,
            "pruned": seq,
        }
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file that is renamed
    finally:
        db.close()
