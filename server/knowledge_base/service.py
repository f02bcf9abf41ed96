"""The knowledge-base service: every operation the API, the CLI and the web UI perform.

Consistency rule between the metadata DB and the vector store: vectors are written and
saved first, DB rows committed after. A crash in between leaves vectors without rows,
which the next ingestion of that file removes (it deletes by source before adding), so
rows never point at vectors that are gone and re-ingesting never duplicates chunks.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
from langchain_core.documents import Document

from configs import get_settings
from server.db.repositories import knowledge_base as kb_repo
from server.db.repositories import knowledge_file as file_repo
from server.db.repositories.knowledge_base import KnowledgeBaseRecord
from server.db.repositories.knowledge_file import ChunkRow, FileIngestion
from server.knowledge_base import duplicates, paths
from server.knowledge_base.embeddings import EmbeddingBackend, check_embedding_model, get_embeddings
from server.knowledge_base.embeddings.background import BackgroundEmbedder
from server.knowledge_base.ingest import ChunkingOptions, ParsedFile, ParseTask, parse_files
from server.knowledge_base.ingest_cache import cache_location, open_cache
from server.knowledge_base.locks import kb_write_lock
from server.knowledge_base.model_guard import check_kb_model, record_kb_model
from server.knowledge_base.search import SearchOptions, finish, prepare_query, rank_candidates
from server.knowledge_base.vector_stores import (
    REMOTE_VS_TYPES,
    SUPPORTED_VS_TYPES,
    ScoredChunk,
    StoreCorrupted,
    StoredChunk,
    VectorStore,
    get_store_cache,
    open_remote_store,
)
from server.memory import return_free_heap

logger = logging.getLogger(__name__)


class KnowledgeBaseNotFound(LookupError):
    pass


class KnowledgeBaseGone(KnowledgeBaseNotFound):
    """The knowledge base was deleted (and maybe created again) while an operation on it ran."""

    def __str__(self) -> str:
        return f"knowledge base {self.args[0]} was deleted while this operation ran; nothing more was written to it"


class KnowledgeBaseExists(ValueError):
    pass


@dataclass
class FileOutcome:
    file_name: str
    chunks: int = 0
    error: str | None = None
    duplicate_of: str | None = None  # same content as this file of the knowledge base: not ingested again


@dataclass
class IngestReport:
    kb_name: str
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0
    split_seconds: float = 0.0
    embed_seconds: float = 0.0
    reused_chunks: int = 0  # chunks whose vector came from a repeat or from the file's previous version
    cached_chunks: int = 0  # chunks whose vector came from the ingest cache
    model_seconds: float = 0.0  # of embed_seconds, spent in the embedding model itself

    @property
    def failed(self) -> dict[str, str]:
        return {f.file_name: f.error for f in self.files if f.error}

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files)

    @property
    def ingested(self) -> int:
        return sum(1 for f in self.files if not f.error and not f.duplicate_of)

    @property
    def duplicates(self) -> dict[str, str]:
        return {f.file_name: f.duplicate_of for f in self.files if f.duplicate_of}


# Progress events: ("parsed", ParsedFile) when a file is parsed, ("embedded", n_chunks) per batch,
# ("embedded_file", ParsedFile) when all of a file's chunks are embedded (stored at the next checkpoint);
# "embedded" comes from the embedding thread.
ProgressCallback = Callable[[str, object], None]


def default_chunking(
    chunk_size: int | None = None, chunk_overlap: int | None = None, zh_title_enhance: bool | None = None
) -> ChunkingOptions:
    settings = get_settings()
    return ChunkingOptions(
        chunk_size=chunk_size or settings.CHUNK_SIZE,
        chunk_overlap=settings.OVERLAP_SIZE if chunk_overlap is None else chunk_overlap,
        zh_title_enhance=settings.ZH_TITLE_ENHANCE if zh_title_enhance is None else zh_title_enhance,
        splitter_name=settings.TEXT_SPLITTER_NAME,
        ocr=settings.OCR_ENABLED,
        pdf_ocr_threshold=tuple(settings.PDF_OCR_THRESHOLD),
        markdown_headers=tuple(tuple(h) for h in settings.MARKDOWN_HEADERS),
    )


# ---- knowledge bases ----------------------------------------------------------------


def get_kb(kb_name: str) -> KnowledgeBaseRecord:
    record = kb_repo.get_kb(kb_name)
    if record is None:
        raise KnowledgeBaseNotFound(kb_name)
    return record


def kb_exists(kb_name: str) -> bool:
    return kb_repo.get_kb(kb_name) is not None


def list_kbs() -> list[KnowledgeBaseRecord]:
    return kb_repo.list_kbs()


def create_kb(kb_name: str, vs_type: str | None = None, embed_model: str | None = None, kb_info: str | None = None):
    settings = get_settings()
    paths.validate_kb_name(kb_name)
    vs_type = vs_type or settings.DEFAULT_VS_TYPE
    embed_model = embed_model or settings.EMBEDDING_MODEL
    if vs_type not in SUPPORTED_VS_TYPES:
        raise ValueError(f"unsupported vector store type '{vs_type}' (supported: {', '.join(SUPPORTED_VS_TYPES)})")
    if kb_exists(kb_name):
        raise KnowledgeBaseExists(kb_name)
    backend = get_embeddings(embed_model)  # fails early with a clear message for an unknown model
    info = kb_info or settings.KB_INFO.get(kb_name) or f"关于{kb_name}的知识库"
    # The row (and its new epoch) comes first, so the empty store below is written as this knowledge base's.
    kb = kb_repo.insert_kb(kb_name, info, vs_type, embed_model)
    if kb is None:
        raise KnowledgeBaseExists(kb_name)
    try:
        with writing_to(kb):
            _discard_leftovers(kb_name)
            paths.content_path(kb_name).mkdir(parents=True, exist_ok=True)
            _write_store(kb, backend, lambda store: None, force_save=True)
            record_kb_model(kb_name, embed_model, backend)
    except BaseException:
        kb_repo.delete_kb_row(kb_name)
        raise


def _discard_leftovers(kb_name: str) -> None:
    """A new knowledge base starts empty: vectors or file rows left under its name without a knowledge base
    (by older versions, or a crash in delete_kb) belong to no one. Files in content/ stay: they are the
    user's, and only count once ingested."""
    stale_stores = paths.kb_path(kb_name) / "vector_store"
    if stale_stores.exists():
        logger.warning("discarding the vector store left in %s by an earlier knowledge base", stale_stores)
        shutil.rmtree(stale_stores)
    get_store_cache().forget_kb(kb_name)
    file_repo.delete_all_files(kb_name)


def ensure_kb(kb_name: str, embed_model: str | None = None, vs_type: str | None = None) -> KnowledgeBaseRecord:
    if not kb_exists(kb_name):
        create_kb(kb_name, vs_type, embed_model=embed_model)
    return get_kb(kb_name)


def delete_kb(kb_name: str) -> None:
    """Remove a knowledge base. Holding its write lock, so work still running on it (a rebuild whose client
    went away) either finishes first or finds it gone at its next write and stops."""
    kb = get_kb(kb_name)
    folder = paths.kb_path(kb_name)
    with writing_to(kb):
        get_store_cache().forget_kb(kb_name)
        drop_remote_stores(kb)  # first: a store server that fails leaves the knowledge base whole
        file_repo.delete_all_files(kb_name)
        kb_repo.delete_kb_row(kb_name)
        if folder.is_symlink():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)


def update_info(kb_name: str, kb_info: str) -> None:
    if not kb_repo.update_kb_info(kb_name, kb_info):
        raise KnowledgeBaseNotFound(kb_name)


def drop_remote_stores(record: KnowledgeBaseRecord, vs_type: str | None = None) -> None:
    """Delete a knowledge base's store and summary store on their server (Milvus, PostgreSQL)."""
    vs_type = vs_type or record.vs_type
    if vs_type not in REMOTE_VS_TYPES:
        return
    from server.knowledge_base.summary import summary_store_location

    dimension = get_embeddings(record.embed_model).dimension
    for key, folder in (
        _store_key(record.kb_name, record.embed_model),
        summary_store_location(record.kb_name, record.embed_model),
    ):
        get_store_cache().forget(key)
        open_remote_store(vs_type, key, folder, dimension).drop()


# ---- vector store access ----------------------------------------------------------------


_writes_held = threading.local()


@contextmanager
def writing_to(kb: KnowledgeBaseRecord) -> Iterator[KnowledgeBaseRecord]:
    """Hold the knowledge base's write lock, and raise KnowledgeBaseGone if it is no longer the knowledge base
    ``kb`` was read as: deleted, or deleted and created again under the same name (a new epoch).

    Every write to a knowledge base's store or rows happens inside, and delete_kb takes the same lock, so
    background work on a deleted knowledge base cannot bring it back or write into its successor.
    Re-entrant within a thread."""
    held: set[str] = _writes_held.__dict__.setdefault("names", set())
    if kb.kb_name in held:
        yield kb
        return
    # PostgreSQL metadata: an advisory lock on its server (all hosts); SQLite: a file lock (its one host).
    with kb_write_lock(kb.kb_name):
        current = kb_repo.get_kb(kb.kb_name)
        if current is None or current.epoch != kb.epoch:
            raise KnowledgeBaseGone(kb.kb_name)
        held.add(kb.kb_name)
        try:
            yield current
        finally:
            held.discard(kb.kb_name)


def _store_key(kb_name: str, embed_model: str) -> tuple[tuple[str, str], object]:
    return (kb_name, embed_model), paths.vector_store_path(kb_name, embed_model)


def _write_store(
    kb: KnowledgeBaseRecord,
    backend: EmbeddingBackend,
    change: Callable[[VectorStore], object],
    *,
    force_save: bool = False,
    save: bool = True,
):
    key, folder = _store_key(kb.kb_name, kb.embed_model)
    cache = get_store_cache()
    with writing_to(kb), cache.write(key, folder, backend.dimension, save=save, vs_type=kb.vs_type) as store:
        result = change(store)
        if force_save:
            store.dirty = True
        return result


def _read_store(kb: KnowledgeBaseRecord, backend: EmbeddingBackend, use: Callable[[VectorStore], object]):
    key, folder = _store_key(kb.kb_name, kb.embed_model)
    try:
        with get_store_cache().read(key, folder, backend.dimension, kb.vs_type) as store:
            return use(store)
    except (OSError, StoreCorrupted):
        # A delete_kb in another request can remove the folder while we read it: that is "not found",
        # not a server error. Anything else is a real problem with the store.
        if not kb_exists(kb.kb_name) or not folder.exists():
            raise KnowledgeBaseNotFound(kb.kb_name) from None
        raise


def _checked_backend(kb: KnowledgeBaseRecord) -> EmbeddingBackend:
    """The knowledge base's embedding model, refused (EmbeddingModelChanged) if it is not the one recorded."""
    backend = get_embeddings(kb.embed_model)
    check_kb_model(kb, backend)
    return backend


def save_vector_store(kb_name: str) -> None:
    kb = get_kb(kb_name)
    backend = get_embeddings(kb.embed_model)
    _write_store(kb, backend, lambda store: None)


def clear_vector_store(kb_name: str, kb: KnowledgeBaseRecord | None = None) -> None:
    kb = kb or get_kb(kb_name)
    backend = get_embeddings(kb.embed_model)
    with writing_to(kb):
        _write_store(kb, backend, lambda store: store.clear(), force_save=True)
        file_repo.delete_all_files(kb_name)


# ---- files ------------------------------------------------------------------------------


def ingest_files(
    kb_name: str,
    file_names: list[str],
    options: ChunkingOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    not_refresh_vs_cache: bool = False,
    workers: int | None = None,
    kb: KnowledgeBaseRecord | None = None,
) -> IngestReport:
    """Parse, embed and store files that are already in content/; a broken file fails alone.

    ``kb``, when given, is the knowledge base as the caller read it: if it is deleted meanwhile, the next
    write raises KnowledgeBaseGone instead of writing into whatever has the name by then.

    Files are embedded in a background thread while the next ones are parsed; the store is changed and
    saved, and the rows written, every INGEST_CHECKPOINT_CHUNKS chunks, so a crash loses at most one
    checkpoint.
    """
    kb = kb or get_kb(kb_name)
    options = options or default_chunking()
    check_embedding_model(kb.embed_model)  # a wrong name fails now, not after minutes of OCR
    check_kb_model(kb)  # and a changed model before anything is mixed into the store
    started = time.perf_counter()
    report = IngestReport(kb_name)
    tasks = _parse_tasks(kb, file_names, options, report)
    workers = get_settings().INGEST_WORKERS if workers is None else workers
    on_embedded = (lambda count: progress("embedded", count)) if progress else None
    previous = _previous_vectors(kb, [task.file_name for task in tasks])
    cache = open_cache(tasks[0].cache) if tasks else None
    with BackgroundEmbedder(partial(get_embeddings, kb.embed_model), on_embedded, previous, cache) as embedder:
        writer = _FileWriter(kb, embedder, report, progress, not_refresh_vs_cache)
        for parsed in parse_files(tasks, workers):
            report.load_seconds += parsed.load_seconds
            report.split_seconds += parsed.split_seconds
            if progress:
                progress("parsed", parsed)
            if parsed.error:
                report.files.append(FileOutcome(parsed.file_name, error=parsed.error))
                with writing_to(kb):
                    file_repo.record_error(kb_name, parsed.file_name, parsed.error)
                continue
            writer.submit(parsed)
            writer.collect_ready()
        writer.collect_ready(wait=True)
        writer.checkpoint()
        report.embed_seconds, report.reused_chunks = embedder.seconds, embedder.reused
        report.cached_chunks, report.model_seconds = embedder.cached, embedder.model_seconds
    report.seconds = time.perf_counter() - started
    return report


def _parse_tasks(kb: KnowledgeBaseRecord, file_names: list[str], options: ChunkingOptions, report: IngestReport):
    """A ParseTask per file to parse; unsafe names fail and duplicate contents are set aside in ``report``."""
    kb_name = kb.kb_name
    location = cache_location()
    hashed: list[tuple[str, Path, str | None]] = []
    for name in file_names:
        try:
            path = paths.file_path(kb_name, name)
        except paths.UnsafeName as exc:
            report.files.append(FileOutcome(name, error=str(exc)))
            continue
        hashed.append((name, path, duplicates.digest_or_none(path)))
    found = {}
    if duplicates.policy() != "allow":
        found = duplicates.find_duplicates(kb_name, [(name, digest) for name, _, digest in hashed])
        _set_aside_duplicates(kb, found, report)
    return [
        ParseTask(name, str(path), options, cache=location, file_hash=digest)
        for name, path, digest in hashed
        if name not in found
    ]


def _set_aside_duplicates(kb: KnowledgeBaseRecord, found: dict[str, str], report: IngestReport) -> None:
    """Report duplicates; a name that held other content before loses its old chunks."""
    refuse = duplicates.policy() == "refuse"
    with writing_to(kb):
        stale = set(file_repo.list_file_names(kb.kb_name)).intersection(found)
        if stale:
            delete_files(kb.kb_name, sorted(stale))
        for name, original in found.items():
            reason = duplicates.message(name, original)
            report.files.append(FileOutcome(name, error=reason if refuse else None, duplicate_of=original))
            file_repo.record_error(kb.kb_name, name, reason)


class _FileWriter:
    """Stores parsed files in order as their vectors arrive, a checkpoint at a time.

    A file's "embedded_file" progress event comes as soon as its vectors are ready, so progress follows
    the work. The store itself changes only at checkpoints, each one change-and-save under the store's
    file lock: an unsaved change left in memory between lock holds would make this process overwrite
    what another process (init_database.py beside the API server) saved meanwhile. Vectors first, then
    the files' DB rows.
    """

    def __init__(self, kb: KnowledgeBaseRecord, embedder: BackgroundEmbedder, report, progress, not_refresh: bool):
        self.kb, self.embedder = kb, embedder
        self.report: IngestReport = report
        self.progress: ProgressCallback | None = progress
        self.not_refresh = not_refresh
        self.waiting: deque[tuple[ParsedFile, Future]] = deque()
        self.waiting_chunks = 0
        self.ready: list[tuple[ParsedFile, np.ndarray]] = []
        self.ready_chunks = 0
        self.untrimmed_chunks = 0  # chunks embedded since the last return_free_heap()

    # Parsed chunks that may wait for the embedder: when parsing outruns it (plain text on a CPU), the
    # parser waits too, so memory stays flat however many files there are.
    MAX_WAITING_CHUNKS = 4096
    # The embedding and torch threads free most of what they allocate in glibc arenas that keep it: without
    # a trim, RSS climbed ~75 KB per chunk embedded (the memory in use < 1 KB). A trim costs milliseconds.
    TRIM_EVERY_CHUNKS = 500

    def submit(self, parsed: ParsedFile) -> None:
        self.waiting.append((parsed, self.embedder.submit([text for text, _ in parsed.chunks])))
        self.waiting_chunks += len(parsed.chunks)

    def collect_ready(self, wait: bool = False) -> None:
        """Take the waiting files whose vectors are done (all of them, waiting, when ``wait``)."""
        while self.waiting and (
            wait or self.waiting[0][1].done() or self.waiting_chunks > self.MAX_WAITING_CHUNKS
        ):
            parsed, vectors = self.waiting.popleft()
            self.waiting_chunks -= len(parsed.chunks)
            self.ready.append((parsed, vectors.result()))
            self.ready_chunks += len(parsed.chunks)
            if self.progress:
                self.progress("embedded_file", parsed)
            # A checkpoint's save writes only its change (FAISS commits the new rows to SQLite, remote
            # stores commit on their server), so a constant interval keeps memory and lost work bounded.
            if self.ready_chunks >= get_settings().INGEST_CHECKPOINT_CHUNKS:
                self.checkpoint()
            self.untrimmed_chunks += len(parsed.chunks)
            if self.untrimmed_chunks >= self.TRIM_EVERY_CHUNKS:
                return_free_heap()
                self.untrimmed_chunks = 0

    def checkpoint(self) -> None:
        """Replace the ready files' chunks and save, in one hold of the store's lock; then write their rows."""
        if not self.ready:
            return
        ingestions = []

        def replace_files(store: VectorStore) -> None:
            for parsed, vectors in self.ready:
                store.delete(store.ids_for_source(parsed.file_name))
                chunks = [StoredChunk("", text, metadata) for text, metadata in parsed.chunks]
                doc_ids = store.add(chunks, vectors)
                ingestions.append(_ingestion(parsed, chunks, doc_ids))

        with writing_to(self.kb):
            _write_store(self.kb, self.embedder.backend, replace_files, save=not self.not_refresh)
            file_repo.record_ingestions(self.kb.kb_name, ingestions)
        self.report.files.extend(FileOutcome(parsed.file_name, len(parsed.chunks)) for parsed, _ in self.ready)
        self.ready, self.ready_chunks = [], 0


def _ingestion(parsed: ParsedFile, chunks: list[StoredChunk], doc_ids: list[str]) -> FileIngestion:
    rows = [ChunkRow(doc_id, chunk.metadata) for doc_id, chunk in zip(doc_ids, chunks, strict=True)]
    return FileIngestion(
        parsed.file_name,
        parsed.loader_name,
        parsed.splitter_name,
        parsed.file_mtime,
        parsed.file_size,
        parsed.file_hash,
        False,
        rows,
    )


def _previous_vectors(kb: KnowledgeBaseRecord, file_names: list[str]):
    """For files being re-ingested, a reader of their stored chunks' texts and vectors (or None)."""
    stored = set(file_repo.list_file_names(kb.kb_name)).intersection(file_names)
    if not stored:
        return None

    def read(backend: EmbeddingBackend) -> tuple[list[str], np.ndarray]:
        # Bounded like the embedder's memory, so re-ingesting a huge knowledge base stays in RAM.
        limit = BackgroundEmbedder.capacity(backend.dimension)
        return _read_store(kb, backend, lambda store: store.texts_and_vectors(stored, limit))

    return read


def add_custom_docs(kb_name: str, file_name: str, docs: list[Document], *, not_refresh_vs_cache: bool = False) -> int:
    """Store chunks a client wrote itself for a file (Chatchat's `docs` field); returns the count."""
    kb = get_kb(kb_name)
    paths.validate_file_name(file_name)
    backend = _checked_backend(kb)
    chunks = [StoredChunk("", d.page_content, {**d.metadata, "source": file_name}) for d in docs if d.page_content]
    vectors = backend.embed([c.page_content for c in chunks])

    def replace(store: VectorStore) -> list[str]:
        store.delete(store.ids_for_source(file_name))
        return store.add(chunks, vectors)

    path = paths.file_path(kb_name, file_name)
    stat = path.stat() if path.is_file() else None
    with writing_to(kb):
        doc_ids = _write_store(kb, backend, replace, save=not not_refresh_vs_cache)
        rows = [ChunkRow(doc_id, chunk.metadata) for doc_id, chunk in zip(doc_ids, chunks, strict=True)]
        mtime, size = (stat.st_mtime, stat.st_size) if stat else (0.0, 0)
        ingestion = FileIngestion(file_name, "CustomDocs", "CustomDocs", mtime, size, None, True, rows)
        file_repo.record_ingestions(kb_name, [ingestion])
    return len(chunks)


def delete_files(
    kb_name: str, file_names: list[str], *, delete_content: bool = False, not_refresh_vs_cache: bool = False
) -> dict[str, str]:
    """Remove files' chunks (and, if asked, the files themselves); returns {file: reason} for failures."""
    kb = get_kb(kb_name)
    backend = get_embeddings(kb.embed_model)
    known = set(file_repo.list_file_names(kb_name))
    failed: dict[str, str] = {}
    targets = []
    for name in file_names:
        try:
            path = paths.file_path(kb_name, name)
        except paths.UnsafeName as exc:
            failed[name] = str(exc)
            continue
        if name not in known and not path.is_file():
            failed[name] = f"未找到文件 {name}"
            continue
        targets.append((name, path))

    def remove(store: VectorStore) -> None:
        for name, _ in targets:
            store.delete(store.ids_for_source(name))

    with writing_to(kb):
        _write_store(kb, backend, remove, save=not not_refresh_vs_cache)
        file_repo.delete_files(kb_name, [name for name, _ in targets])
    if delete_content:
        for _, path in targets:
            if path.is_file() or path.is_symlink():
                path.unlink()
    return failed


def list_files(kb_name: str) -> list[str]:
    get_kb(kb_name)
    return file_repo.list_file_names(kb_name)


def file_details(kb_name: str) -> list[dict]:
    """Every file in content/ or in the database: how it was ingested, or why it failed."""
    get_kb(kb_name)
    records = {record.file_name: record for record in file_repo.list_files(kb_name)}
    errors = file_repo.list_errors(kb_name)
    in_folder = set(paths.list_content_files(kb_name))
    details = []
    for name in sorted(in_folder | set(records)):
        record = records.get(name)
        details.append(
            {
                "file_name": name,
                "file_ext": PurePosixPath(name).suffix.lower(),
                "document_loader": record.document_loader_name if record else "",
                "text_splitter": record.text_splitter_name if record else "",
                "docs_count": record.docs_count if record else 0,
                "file_size": record.file_size if record else _size_or_none(paths.file_path(kb_name, name)),
                "file_mtime": record.file_mtime if record else None,
                "custom_docs": record.custom_docs if record else False,
                "in_folder": name in in_folder,
                "in_db": record is not None,
                "error": errors.get(name, ""),
            }
        )
    return details


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# ---- search and chunks --------------------------------------------------------------------


def search(
    kb_name: str,
    query: str,
    top_k: int | None = None,
    score_threshold: float | None = None,
    mode: str | None = None,
    rerank: bool | None = None,
) -> list[ScoredChunk]:
    """The best chunks for a query in the chosen mode (SEARCH_MODE by default); see search/."""
    settings = get_settings()
    options = SearchOptions.from_settings(mode, rerank)
    kb = get_kb(kb_name)
    backend = _checked_backend(kb)
    prepared = prepare_query(query, lambda text: backend.embed([text], is_query=True)[0])
    top_k = settings.VECTOR_SEARCH_TOP_K if top_k is None else top_k
    threshold = settings.SCORE_THRESHOLD if score_threshold is None else score_threshold
    ranked = _read_store(kb, backend, lambda store: rank_candidates(store, prepared, top_k, threshold, options))
    return finish(prepared, ranked, top_k, options)


def list_docs(kb_name: str, file_name: str | None = None, metadata: dict | None = None) -> list[StoredChunk]:
    """Chunks of a file (or with matching first-level metadata), in stored order."""
    rows = file_repo.list_chunks(kb_name, file_name or None, metadata or None)
    return get_chunks(kb_name, [row.doc_id for row in rows])  # raises for an unknown knowledge base


def get_chunks(kb_name: str, doc_ids: list[str]) -> list[StoredChunk]:
    """The chunks with these vector-store ids, in the order given; unknown ids are skipped."""
    kb = get_kb(kb_name)
    backend = get_embeddings(kb.embed_model)
    return _read_store(kb, backend, lambda store: store.get(doc_ids))


def update_docs_by_id(kb_name: str, docs: dict[str, Document]) -> bool:
    """Replace the text (and metadata) of existing chunks, keeping their ids; False if an id is unknown."""
    kb = get_kb(kb_name)
    backend = _checked_backend(kb)
    if not docs:
        return True
    ids = list(docs)
    vectors = backend.embed([docs[i].page_content for i in ids])

    def update(store: VectorStore) -> dict[str, dict] | None:
        stored = store.get(ids)
        if len(stored) != len(ids):
            return None
        updated = {}
        for doc_id, vector, old in zip(ids, vectors, stored, strict=True):
            source = old.metadata.get("source")
            metadata = {**docs[doc_id].metadata, "source": source}
            store.update_text(doc_id, docs[doc_id].page_content, metadata, vector)
            updated[doc_id] = metadata
        return updated

    with writing_to(kb):
        updated = _write_store(kb, backend, update)
        if updated is None:
            return False
        file_repo.update_chunk_metadata(kb_name, updated)
    return True


# ---- rebuilding ---------------------------------------------------------------------------


def recreate_vector_store(
    kb_name: str,
    options: ChunkingOptions | None = None,
    *,
    embed_model: str | None = None,
    progress: ProgressCallback | None = None,
    not_refresh_vs_cache: bool = False,
    workers: int | None = None,
    vs_type: str | None = None,
) -> IngestReport:
    """Drop the vectors and file rows of a knowledge base and ingest everything in content/ (a new
    knowledge base gets ``vs_type``; an existing one keeps its store: init_database.py --migrate-kb moves it)."""
    kb = ensure_kb(kb_name, embed_model, vs_type)
    if embed_model and embed_model != kb.embed_model:
        get_embeddings(embed_model)
        with writing_to(kb):
            kb_repo.set_embed_model(kb_name, embed_model)
            kb = get_kb(kb_name)  # read under the lock: the same knowledge base, with its new model
    # Files ingested before come first, so of two copies of one content the one ingested stays.
    ingested = set(file_repo.list_file_names(kb_name))
    names = sorted(paths.list_content_files(kb_name), key=lambda name: name not in ingested)
    clear_vector_store(kb_name, kb)
    with writing_to(kb):
        record_kb_model(kb_name, kb.embed_model)  # the fix for EmbeddingModelChanged
        kb = get_kb(kb_name)
    report = ingest_files(
        kb_name,
        names,
        options,
        progress=progress,
        not_refresh_vs_cache=not_refresh_vs_cache,
        workers=workers,
        kb=kb,
    )
    if not not_refresh_vs_cache:
        _finish_rebuild(kb)
    return report


def _finish_rebuild(kb: KnowledgeBaseRecord) -> None:
    def finish(store: VectorStore) -> None:
        if store.finish_rebuild():
            store.dirty = True  # saved as the write block ends

    backend = get_embeddings(kb.embed_model)  # its dimension only: the weights are not loaded for it
    _write_store(kb, backend, finish)


def iter_files_to_increment(kb_name: str) -> Iterator[str]:
    known = set(file_repo.list_file_names(kb_name))
    yield from (name for name in paths.list_content_files(kb_name) if name not in known)


# ---- portable knowledge bases (portable.py) -------------------------------------------------


@dataclass
class FileSnapshot:
    """One ingested file as stored: its record, its chunks and their vectors (row i is chunk i's)."""

    record: FileIngestion
    chunks: list[StoredChunk]
    vectors: np.ndarray


def snapshot_files(kb_name: str) -> list[FileSnapshot]:
    """Every ingested file of a knowledge base with its chunks and vectors, read in one hold of the store."""
    kb = get_kb(kb_name)
    backend = get_embeddings(kb.embed_model)
    records = file_repo.list_files(kb_name)

    def read(store: VectorStore) -> list[FileSnapshot]:
        snapshots = []
        for record in records:
            chunks = store.get(store.ids_for_source(record.file_name))
            _, vectors = store.texts_and_vectors({record.file_name})
            rows = [ChunkRow(chunk.doc_id, chunk.metadata) for chunk in chunks]
            ingestion = FileIngestion(
                record.file_name,
                record.document_loader_name,
                record.text_splitter_name,
                record.file_mtime,
                record.file_size,
                record.file_hash,
                record.custom_docs,
                rows,
            )
            snapshots.append(FileSnapshot(ingestion, chunks, vectors))
        return snapshots

    return _read_store(kb, backend, read)


def store_snapshots(kb_name: str, snapshots: list[FileSnapshot]) -> int:
    """Store files' chunks with the vectors given (nothing is embedded), then their rows; returns the chunk count.

    The chunks keep their ids, so an imported knowledge base answers searches as the exported one did."""
    kb = get_kb(kb_name)
    backend = get_embeddings(kb.embed_model)

    def replace(store: VectorStore) -> int:
        for snapshot in snapshots:
            store.delete(store.ids_for_source(snapshot.record.file_name))
            store.add(snapshot.chunks, snapshot.vectors)
        return sum(len(snapshot.chunks) for snapshot in snapshots)

    with writing_to(kb):
        count = _write_store(kb, backend, replace, force_save=True)
        file_repo.record_ingestions(kb_name, [snapshot.record for snapshot in snapshots])
    return count
