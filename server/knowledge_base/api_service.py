"""Request-shaped helpers behind the knowledge-base routes: the HTTP layer stays thin.

Everything here is synchronous and meant to run in a worker thread (the routes call it
through the thread pool), so a long ingestion never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi.exceptions import RequestValidationError
from langchain_core.documents import Document
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from server import security
from server.db.repositories import knowledge_file as file_repo
from server.knowledge_base import duplicates, paths, service
from server.knowledge_base.embeddings import list_embedding_models
from server.knowledge_base.error_paths import relative_paths
from server.knowledge_base.ingest import ChunkingOptions
from server.knowledge_base.search import SEARCH_MODES
from server.knowledge_base.search.evaluation import EVAL_MODES, RERANKED_MODE, Question, evaluate
from server.knowledge_base.vector_stores import ScoredChunk, StoredChunk

# Score given to chunks listed by file name or metadata (no query): 0.2.10's default.
LISTING_SCORE = 3.0
COPY_BLOCK = 1 << 20

logger = logging.getLogger(__name__)


class DocumentIn(BaseModel):
    page_content: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


_CUSTOM_DOCS = TypeAdapter(dict[str, list[DocumentIn]])


# ---- request fields ---------------------------------------------------------------------------


def field_error(field: str, message: str, kind: str = "value_error", location: str = "body") -> RequestValidationError:
    """A FastAPI-style 422 naming the field."""
    return RequestValidationError([{"type": kind, "loc": (location, field), "msg": message, "input": None}])


def parse_custom_docs(raw: str | dict | None, field: str = "docs") -> dict[str, list[Document]]:
    """The ``docs`` field: a JSON string (or, as an extension, an object) {file: [{page_content, metadata}]}."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise field_error(field, f"Invalid JSON: {exc.msg} at position {exc.pos}", "json_invalid") from exc
    try:
        parsed = _CUSTOM_DOCS.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise field_error(field, f"{first['msg']} at {where or 'top level'}") from exc
    docs = {}
    for name, items in parsed.items():
        docs[security.check_file_name(name)] = [Document(d.page_content, metadata=d.metadata) for d in items]
    return docs


def chunking(chunk_size: int, chunk_overlap: int, zh_title_enhance: bool) -> ChunkingOptions:
    if chunk_overlap >= chunk_size:
        raise field_error("chunk_overlap", f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size")
    return service.default_chunking(chunk_size, chunk_overlap, zh_title_enhance)


def embed_model_allowed(name: str) -> bool:
    """Only models configured on this server: a client may not make it load a model from a path it names."""
    return name in list_embedding_models()


# ---- uploads -------------------------------------------------------------------------------------


def upload_name(upload: UploadFile) -> str:
    if not upload.filename:
        raise field_error("files", "every uploaded file needs a file name")
    return security.check_file_name(upload.filename)


def check_upload_sizes(uploads: list[UploadFile]) -> None:
    for upload in uploads:
        security.check_upload_size(upload.filename or "", upload.size)


def save_uploads(kb_name: str, uploads: list[UploadFile], override: bool) -> tuple[list[str], dict[str, str]]:
    """Write uploads into content/ atomically; returns (names written or to ingest, {name: failure}).

    With DUPLICATE_FILES="refuse", an upload whose content the knowledge base (or this request) already
    has under another name is not written and fails."""
    known = set(file_repo.list_file_names(kb_name))
    to_ingest: list[str] = []
    failed: dict[str, str] = {}
    copies = _refused_copies(kb_name, uploads) if duplicates.policy() == "refuse" else {}
    for upload in uploads:
        name = upload_name(upload)
        if name in copies:
            failed[name] = duplicates.message(name, copies[name])
            continue
        target = paths.file_path(kb_name, name)
        if not override and target.is_file() and target.stat().st_size == upload.size:
            failed[name] = f"文件 {name} 已存在。"
            if name not in known:  # on disk but never ingested: still worth vectorizing
                to_ingest.append(name)
            continue
        try:
            _write_upload(upload, kb_name, name)
        except security.UploadTooLarge:
            raise
        except OSError as exc:
            failed[name] = f"{name} 文件上传失败，报错信息为: {relative_paths(str(exc), target, name)}"
            continue
        to_ingest.append(name)
    return to_ingest, failed


def _refused_copies(kb_name: str, uploads: list[UploadFile]) -> dict[str, str]:
    """{upload name: file with the same content} among the knowledge base's files and earlier uploads."""
    hashes = [(upload_name(upload), duplicates.stream_digest(upload.file)) for upload in uploads]
    return duplicates.find_duplicates(kb_name, hashes)


def _write_upload(upload: UploadFile, kb_name: str, name: str) -> None:
    """Copy to a temp file beside the target, counting bytes, then rename over it (no half files)."""
    limit = security.get_settings().MAX_UPLOAD_FILE_SIZE
    paths.file_path(kb_name, name).parent.mkdir(parents=True, exist_ok=True)
    target = paths.file_path(kb_name, name)  # checked again: the folders now exist and could be links
    handle, temp_name = tempfile.mkstemp(prefix="tmp_upload_", dir=target.parent)
    try:
        written = 0
        upload.file.seek(0)
        with os.fdopen(handle, "wb") as out:
            while block := upload.file.read(COPY_BLOCK):
                written += len(block)
                if written > limit:
                    raise security.UploadTooLarge(f"文件 {upload.filename} 超过大小限制 ({limit} bytes)")
                out.write(block)
        if target.is_symlink():
            target.unlink()
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def read_temp_uploads(uploads: list[UploadFile]) -> list[tuple[str, bytes]]:
    """(name, bytes) pairs for file chat; names are checked, sizes were checked before reading."""
    pairs = []
    for upload in uploads:
        name = upload_name(upload)
        upload.file.seek(0)
        pairs.append((name, upload.file.read()))
    return pairs


# ---- vectorizing ---------------------------------------------------------------------------------


def vectorize(
    kb_name: str,
    file_names: list[str],
    custom_docs: dict[str, list[Document]],
    options: ChunkingOptions,
    *,
    override_custom_docs: bool,
    not_refresh_vs_cache: bool,
    duplicate_files: dict[str, str] | None = None,
) -> dict[str, str]:
    """(Re)build the chunks of files: custom docs where given, parsed content otherwise; returns failures.

    Files set aside as copies of another file's content are added to ``duplicate_files`` ({file: original})."""
    failed: dict[str, str] = {}
    to_parse: list[str] = []
    for name in dict.fromkeys([*file_names, *custom_docs]):
        record = file_repo.get_file(kb_name, name)
        if record and record.custom_docs and not override_custom_docs and name not in custom_docs:
            continue  # chunks a user wrote by hand are kept unless asked otherwise
        if name in custom_docs:
            # Custom docs need no file in content/: Chatchat's clients send e.g. {"FAQ.MD": [...]} on their own,
            # and they become a file entry of their own (custom_docs true), listed, searched and deleted as one.
            try:
                service.add_custom_docs(kb_name, name, custom_docs[name], not_refresh_vs_cache=not_refresh_vs_cache)
            except Exception as exc:  # one file's failure must not stop the others
                failed[name] = f"为 {name} 添加自定义docs时出错：{exc}"
            continue
        if not paths.file_path(kb_name, name).is_file():
            failed[name] = f"未找到文件 {name}"
            continue
        to_parse.append(name)
    if to_parse:
        report = service.ingest_files(kb_name, to_parse, options, not_refresh_vs_cache=not_refresh_vs_cache)
        for name, reason in report.failed.items():
            failed[name] = f"从文件 {kb_name}/{name} 加载文档时出错：{reason}"
        if duplicate_files is not None:
            duplicate_files.update(report.duplicates)
    return failed


# ---- search --------------------------------------------------------------------------------------


def document_json(chunk: StoredChunk, score: float, details: dict | None = None) -> dict:
    metadata = {**chunk.metadata, **(details or {}), "id": chunk.doc_id}
    return {
        "page_content": chunk.page_content,
        "metadata": metadata,
        "type": "Document",
        "id": chunk.doc_id,
        "score": score,
    }


def search_documents(
    kb_name: str,
    query: str,
    top_k: int,
    score_threshold: float,
    file_name: str,
    metadata: dict,
    search_mode: str | None = None,
    rerank: bool | None = None,
):
    """search_docs: hits for a query, or every chunk of a file / with matching metadata when no query."""
    if query:
        hits: list[ScoredChunk] = service.search(kb_name, query, top_k, score_threshold, search_mode, rerank)
        return [document_json(hit.chunk, round(hit.score, 6), hit.details) for hit in hits]
    if not file_name and not metadata:
        return []
    names = matching_file_names(kb_name, file_name) if file_name else [None]
    documents = []
    for name in names:
        documents += [document_json(c, LISTING_SCORE) for c in service.list_docs(kb_name, name, metadata)]
    return documents


def matching_file_names(kb_name: str, pattern: str) -> list[str]:
    """The file itself when it exists; else SQL-LIKE matching (``%``, ``_``) within this KB only."""
    names = file_repo.list_file_names(kb_name)
    if pattern in names or not re.search(r"[%_]", pattern):
        return [pattern]
    glob = fnmatch.translate(pattern.replace("[", "[[]").replace("%", "*").replace("_", "?"))
    regex = re.compile(glob, re.IGNORECASE | re.DOTALL)
    return [name for name in names if regex.match(name)]


# ---- retrieval evaluation ------------------------------------------------------------------------


def default_eval_modes() -> list[str]:
    modes = list(SEARCH_MODES)
    return [*modes, RERANKED_MODE] if security.get_settings().USE_RERANKER else modes


def parse_eval_modes(raw: str | list[str] | None) -> list[str]:
    """Modes to evaluate, from a list or a comma-separated string; a 422 names an unknown one."""
    names = raw.split(",") if isinstance(raw, str) else (raw or [])
    modes = [name.strip() for name in names if name.strip()] or default_eval_modes()
    unknown = [mode for mode in modes if mode not in EVAL_MODES]
    if unknown:
        raise field_error("modes", f"unknown mode {unknown[0]!r}: use {', '.join(EVAL_MODES)}")
    return list(dict.fromkeys(modes))


def evaluate_retrieval(kb_name: str, questions: list[Question], modes: list[str], top_k: int) -> list[dict]:
    """Metrics per mode for a knowledge base; "hybrid+rerank" is hybrid with the reranker on, the
    others without it, whatever USE_RERANKER says, so each row measures one thing."""

    def search(question: str, mode: str, k: int) -> list[ScoredChunk]:
        reranked = mode == RERANKED_MODE
        return service.search(kb_name, question, k, 1.0, "hybrid" if reranked else mode, rerank=reranked)

    return evaluate(questions, modes, search, top_k)


# ---- progress streams ----------------------------------------------------------------------------

Emit = Callable[[dict], None]


def sse_json(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False)


async def stream_from_thread(work: Callable[[Emit], None], on_error: Callable[[Exception], dict]) -> AsyncIterator[str]:
    """Run ``work(emit)`` in a worker thread and yield each emitted event as soon as it is made."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def emit(event: dict) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def run() -> None:
        try:
            work(emit)
        except Exception as exc:
            # Logged too: the client may be gone, and this is the only trace of why the work stopped.
            logger.warning("streamed work stopped: %s", exc)
            emit(on_error(exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    thread = threading.Thread(target=run, name="kb-progress", daemon=True)
    thread.start()
    while (event := await queue.get()) is not done:
        yield sse_json(event)
    await anyio.to_thread.run_sync(thread.join)
