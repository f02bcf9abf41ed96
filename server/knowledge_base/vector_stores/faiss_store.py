"""A FAISS index with its documents, saved without pickle and replaced atomically.

On disk, in one folder per (knowledge base, embedding model):
  index.<gen>.faiss   the FAISS index (inner product over unit vectors, int64 ids)
  docs.<gen>.json     chunk text and metadata by doc id
  keywords.<gen>.json the keyword index: each chunk's search terms with their counts
  CURRENT             the generation to load, replaced last with os.replace()

A crash or kill at any point of a save leaves CURRENT naming the previous complete
generation. Nothing is unpickled, so a file a client managed to write cannot run code.

The keyword (BM25) index is kept in step by the same add and delete calls and saved in the same
generation. A store saved before it existed (or by another tokenizer version) gets it on load,
from the stored texts: nothing is embedded again.

Scores: score = (1 - cosine) / 2, so 0 means identical and 1 opposite; a hit is kept
when score <= score_threshold (the default threshold 1.0 keeps everything).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

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
# The files of one generation, <kind>.<gen>.<suffix>, by kind.
GENERATION_FILES = {"docs": "json", "index": "faiss", "keywords": "json"}
FORMAT_VERSION = 1
# Bump when tokenize() changes, so stores saved with the old terms rebuild them on load.
TOKENIZER_VERSION = 1

logger = logging.getLogger(__name__)


class FaissStore(VectorStore):
    def __init__(self, dimension: int):
        self.dimension = dimension
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self.chunks: dict[str, StoredChunk] = {}
        self._int_ids: dict[str, int] = {}
        self._doc_ids: dict[int, str] = {}
        # doc ids per source file, in insertion order: finding a file's chunks must not scan the
        # whole store, or re-ingesting thousands of files would take time quadratic in the store size.
        self._ids_by_source: dict[str, dict[str, None]] = {}
        self.keywords = BM25Index()  # keyed by the same int ids as the FAISS index
        self._next_id = 0
        self.generation = 0
        self.dirty = False
        self.keywords_rebuilt = False  # loaded without a saved keyword index: the terms were made on load

    # ---- reading -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, vector: np.ndarray, top_k: int, score_threshold: float = 1.0) -> list[ScoredChunk]:
        if not self.chunks or top_k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = _ivf_settings()[1]
        similarities, ids = self.index.search(query, min(top_k, len(self.chunks)))
        hits = []
        for similarity, int_id in zip(similarities[0], ids[0], strict=True):
            doc_id = self._doc_ids.get(int(int_id))
            if doc_id is None:
                continue
            score = similarity_to_score(float(similarity))
            if score <= score_threshold:
                hits.append(ScoredChunk(self.chunks[doc_id], score))
        return hits

    def keyword_search(self, query_terms: list[str], top_k: int) -> list[tuple[StoredChunk, float]]:
        """The chunks with the best BM25 score for the query terms, best first."""
        hits: list[KeywordHit] = self.keywords.search(query_terms, top_k)
        return [(self.chunks[self._doc_ids[hit.key]], hit.score) for hit in hits]

    def keyword_scores(self, query_terms: list[str], doc_ids: list[str]) -> list[float]:
        return self.keywords.scores(query_terms, [self._int_ids[d] for d in doc_ids])

    def similarities(self, vector: np.ndarray, doc_ids: list[str]) -> np.ndarray:
        """Cosine similarity of the query vector to each stored chunk (vectors are unit length)."""
        if not doc_ids:
            return np.zeros(0, dtype=np.float32)
        int_ids = np.array([self._int_ids[d] for d in doc_ids], dtype=np.int64)
        return self.index.reconstruct_batch(int_ids) @ np.asarray(vector, dtype=np.float32).reshape(-1)

    def get(self, doc_ids: list[str]) -> list[StoredChunk]:
        return [self.chunks[d] for d in doc_ids if d in self.chunks]

    def texts_and_vectors(self, sources: set[str], limit: int | None = None) -> tuple[list[str], np.ndarray]:
        """The stored text and vector of the chunks whose source is one of ``sources`` (at most ``limit``)."""
        doc_ids = [d for source in sources for d in self._ids_by_source.get(source, ())][:limit]
        if not doc_ids:
            return [], np.zeros((0, self.dimension), dtype=np.float32)
        int_ids = np.array([self._int_ids[d] for d in doc_ids], dtype=np.int64)
        return [self.chunks[d].page_content for d in doc_ids], self.index.reconstruct_batch(int_ids)

    def ids_for_source(self, source: str) -> list[str]:
        return list(self._ids_by_source.get(source, ()))

    def export(self, batch_size: int = 1000) -> Iterator[tuple[list[StoredChunk], np.ndarray]]:
        doc_ids = list(self.chunks)
        for start in range(0, len(doc_ids), batch_size):
            batch = doc_ids[start : start + batch_size]
            int_ids = np.array([self._int_ids[d] for d in batch], dtype=np.int64)
            yield [self.chunks[d] for d in batch], self.index.reconstruct_batch(int_ids)

    def sources(self) -> dict[str, list[str]]:
        """Every source file's chunk ids, in insertion order."""
        return {source: list(ids) for source, ids in self._ids_by_source.items()}

    def stale_keyword_ids(self) -> list[str]:
        """Chunks whose keyword-index terms are not what their text gives (a damaged or mismatched keyword file)."""
        return [
            doc_id
            for doc_id, chunk in self.chunks.items()
            if self.keywords.term_counts(self._int_ids[doc_id]) != Counter(tokenize(chunk.page_content))
        ]

    def reindex_keywords(self, doc_ids: list[str]) -> None:
        """Make these chunks' keyword terms again from their stored text; the vectors stay as they are."""
        for doc_id in doc_ids:
            self.keywords.add(self._int_ids[doc_id], tokenize(self.chunks[doc_id].page_content))
        self.dirty = self.dirty or bool(doc_ids)

    # ---- writing -----------------------------------------------------------------
    def add(self, chunks: list[StoredChunk], vectors: np.ndarray) -> list[str]:
        vectors = unit_rows(vectors, len(chunks), self.dimension)
        for chunk in chunks:
            chunk.doc_id = chunk.doc_id or str(uuid.uuid4())
            if chunk.doc_id in self.chunks:
                self.delete([chunk.doc_id])
        int_ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
        self._next_id += len(chunks)
        if len(chunks):
            self.index.add_with_ids(vectors, int_ids)
        for chunk, int_id in zip(chunks, int_ids, strict=True):
            self._remember(chunk, int(int_id))
        self.dirty = True
        if not isinstance(self.index, faiss.IndexIVF) and self.index.ntotal > _ivf_settings()[0]:
            self.index = _ivf_index_from(self.index)
        return [chunk.doc_id for chunk in chunks]

    def delete(self, doc_ids: list[str]) -> int:
        present = [d for d in doc_ids if d in self.chunks]
        if not present:
            return 0
        int_ids = np.array([self._int_ids.pop(d) for d in present], dtype=np.int64)
        self.index.remove_ids(int_ids)
        for doc_id, int_id in zip(present, int_ids, strict=True):
            self._forget(doc_id, int(int_id))
        self.dirty = True
        return len(present)

    def _remember(self, chunk: StoredChunk, int_id: int, terms: list[str] | dict[str, int] | None = None) -> None:
        self.keywords.add(int_id, tokenize(chunk.page_content) if terms is None else terms)
        self.chunks[chunk.doc_id] = chunk
        self._int_ids[chunk.doc_id] = int_id
        self._doc_ids[int_id] = chunk.doc_id
        self._ids_by_source.setdefault(chunk.metadata.get("source"), {})[chunk.doc_id] = None

    def _forget(self, doc_id: str, int_id: int) -> None:
        source = self.chunks.pop(doc_id).metadata.get("source")
        del self._doc_ids[int_id]
        self.keywords.remove(int_id)
        same_source = self._ids_by_source[source]
        del same_source[doc_id]
        if not same_source:
            del self._ids_by_source[source]

    def clear(self) -> None:
        self.delete(list(self.chunks))

    # ---- disk --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write a new generation and make it current; on failure nothing of it stays on disk and
        StoreSaveFailed is raised (the store in memory is unchanged and still dirty)."""
        folder.mkdir(parents=True, exist_ok=True)
        generation = max(self.generation, read_generation(folder)) + 1
        try:
            self._write_generation(folder, generation)
        except OSError as exc:
            if read_generation(folder) != generation:
                _remove_generation(folder, generation)
                raise StoreSaveFailed(exc) from exc
            # CURRENT was replaced and only the folder's fsync failed: the new generation is what
            # any reader loads now, so memory must say so too.
            logger.warning("vector store in %s saved, but syncing its folder failed: %s", folder, exc)
        self.generation = generation
        self.dirty = False
        _remove_other_generations(folder, generation)

    def _write_generation(self, folder: Path, generation: int) -> None:
        docs = {
            "format": FORMAT_VERSION,
            "dimension": self.dimension,
            "next_id": self._next_id,
            "chunks": [
                {"id": c.doc_id, "int_id": self._int_ids[c.doc_id], "text": c.page_content, "metadata": c.metadata}
                for c in self.chunks.values()
            ],
        }
        _write_durably(folder / f"docs.{generation}.json", json.dumps(docs, ensure_ascii=False).encode("utf-8"))
        _write_durably(folder / f"index.{generation}.faiss", faiss.serialize_index(self.index).tobytes())
        _write_durably(folder / f"keywords.{generation}.json", self._keywords_json())
        _write_durably(folder / CURRENT_FILE, str(generation).encode())

    @classmethod
    def load(cls, folder: Path) -> FaissStore:
        generation = read_generation(folder)
        if generation == 0:
            raise FileNotFoundError(f"no vector store saved in {folder}")
        try:
            docs = json.loads((folder / f"docs.{generation}.json").read_text(encoding="utf-8"))
            raw_index = np.frombuffer((folder / f"index.{generation}.faiss").read_bytes(), dtype=np.uint8)
            index = faiss.deserialize_index(raw_index)
        except (OSError, ValueError, RuntimeError) as exc:
            raise StoreCorrupted(f"vector store in {folder} (generation {generation}) cannot be read: {exc}") from exc
        store = cls(int(docs["dimension"]))
        store.index = index
        store._next_id = int(docs["next_id"])
        saved_terms = _read_keywords(folder / f"keywords.{generation}.json")
        for item in docs["chunks"]:
            int_id = int(item["int_id"])
            chunk = StoredChunk(item["id"], item["text"], item.get("metadata") or {})
            store._remember(chunk, int_id, saved_terms.get(int_id))
        store.keywords_rebuilt = bool(docs["chunks"]) and not saved_terms
        if index.ntotal != len(store.chunks):
            raise StoreCorrupted(f"vector store in {folder}: {index.ntotal} vectors but {len(store.chunks)} documents")
        store.generation = generation
        return store

    def _keywords_json(self) -> bytes:
        terms = {str(self._int_ids[d]): self.keywords.term_counts(self._int_ids[d]) for d in self.chunks}
        return json.dumps({"tokenizer": TOKENIZER_VERSION, "terms": terms}, ensure_ascii=False).encode("utf-8")


def _ivf_settings() -> tuple[int, int]:
    from configs import get_settings

    settings = get_settings()
    return settings.FAISS_IVF_THRESHOLD, settings.FAISS_IVF_NPROBE


def _ivf_index_from(flat: faiss.IndexIDMap2) -> faiss.IndexIVFFlat:
    """The same vectors and ids in an inverted-file index: exact search reads every vector, so past
    FAISS_IVF_THRESHOLD chunks a query only reads the FAISS_IVF_NPROBE nearest of ~4*sqrt(n) lists.
    (IVF rather than HNSW: FAISS's HNSW cannot remove vectors, and re-ingesting a file removes its chunks.)"""
    total = flat.ntotal
    vectors = flat.index.reconstruct_n(0, total)
    ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
    lists = int(4 * np.sqrt(total))
    logger.info("FAISS store of %d chunks: building an IVF index with %d lists", total, lists)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(flat.d), flat.d, lists, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(total, min(total, 64 * lists), replace=False)
    index.train(vectors[np.sort(sample)])
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # lets vectors be read back and removed by id
    index.add_with_ids(vectors, ids)
    return index


def _read_keywords(path: Path) -> dict[int, dict[str, int]]:
    """Saved search terms by int id; empty when missing or from another tokenizer (they are rebuilt)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreCorrupted(f"keyword index {path} cannot be read: {exc}") from exc
    if saved.get("tokenizer") != TOKENIZER_VERSION:
        return {}
    return {int(key): counts for key, counts in saved["terms"].items()}


def read_generation(folder: Path) -> int:
    """The generation CURRENT names, 0 when nothing was saved yet."""
    try:
        return int((folder / CURRENT_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
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
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove_generation(folder: Path, generation: int) -> None:
    """Remove what a failed save wrote of a generation that never became current."""
    for kind, suffix in GENERATION_FILES.items():
        try:
            (folder / f"{kind}.{generation}.{suffix}").unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not remove a failed save's file in %s: %s", folder, exc)


def _remove_other_generations(folder: Path, keep: int) -> None:
    for path in folder.iterdir():
        parts = path.name.split(".")
        old_generation = (
            len(parts) == 3 and parts[0] in GENERATION_FILES and parts[1].isdigit() and int(parts[1]) != keep
        )
        leftover_temporary = path.name.startswith(".") and path.name.endswith(".tmp")
        if old_generation or leftover_temporary:
            path.unlink(missing_ok=True)
