"""Parsing files into chunks, in parallel worker processes.

This module stays light to import (no torch): spawned workers import it to run parse_file.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from langchain_core.documents import Document

# Below this many files a worker pool costs more (process start, imports) than it saves.
MIN_FILES_FOR_POOL = 4
# How long a supervised parser process may take to start and import the loaders.
CHILD_START_SECONDS = 120


@dataclass(frozen=True)
class ChunkingOptions:
    chunk_size: int
    chunk_overlap: int
    zh_title_enhance: bool = False
    splitter_name: str = "ChineseRecursiveTextSplitter"
    ocr: bool = True
    pdf_ocr_threshold: tuple[float, float] = (0.6, 0.6)
    markdown_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ParseTask:
    file_name: str  # relative name inside content/, stored as the chunks' source
    path: str
    options: ChunkingOptions
    cache: tuple[str, int] | None = None  # the ingest cache's location (ingest_cache.cache_location())
    file_hash: str | None = None  # when the caller already hashed the file


@dataclass
class ParsedFile:
    file_name: str
    chunks: list[tuple[str, dict]] = field(default_factory=list)
    loader_name: str = ""
    splitter_name: str = ""
    file_size: int = 0
    file_mtime: float = 0.0
    file_hash: str | None = None
    error: str | None = None
    load_seconds: float = 0.0
    split_seconds: float = 0.0


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_file(task: ParseTask) -> ParsedFile:
    """Load and split one file (or take both from the ingest cache). Never raises: a failure comes back
    as ParsedFile.error, and failures are not cached."""
    from server.knowledge_base.ingest_cache import open_cache
    from server.knowledge_base.loaders import LoaderError, loader_name_for

    path = Path(task.path)
    result = ParsedFile(task.file_name)
    try:
        stat = path.stat()
        result.file_size, result.file_mtime = stat.st_size, stat.st_mtime
        result.file_hash = task.file_hash or file_digest(path)
        result.loader_name = loader_name_for(path)
        chunks = _load_and_split(path, task, result, open_cache(task.cache))
    except LoaderError as exc:
        result.error = _client_message(str(exc), task)
        return result
    except Exception as exc:  # a broken file must fail alone, whatever the library raised
        result.error = _client_message(f"{type(exc).__name__}: {exc}", task)
        return result
    if not chunks:
        result.error = "no text could be extracted from this file"
    result.chunks = [(text, _with_source(metadata, task.file_name)) for text, metadata in chunks]
    return result


def _load_and_split(path: Path, task: ParseTask, result: ParsedFile, cache) -> list[tuple[str, dict]]:
    """The file's chunks as (text, metadata): from the cache when it has them, else loaded and split
    (reusing cached documents when only the chunking changed) and then cached."""
    from server.knowledge_base.ingest_cache import parsed
    from server.knowledge_base.loaders import is_table_file, load_file
    from server.knowledge_base.splitters import split_documents

    options = task.options
    is_table = is_table_file(path)
    docs_key = chunks_key = None
    if cache is not None:
        docs_key = parsed.documents_key(result.file_hash, result.loader_name, options.ocr, options.pdf_ocr_threshold)
        chunks_key = parsed.chunks_key(docs_key, _chunking_fields(options), is_table)
        hit = parsed.get_chunks(cache, chunks_key)
        if hit is not None:
            chunks, result.splitter_name = hit
            return chunks
    started = time.perf_counter()
    docs = parsed.get_documents(cache, docs_key) if cache is not None else None
    if docs is None:
        docs = load_file(path, ocr=options.ocr, pdf_ocr_threshold=options.pdf_ocr_threshold)
        if cache is not None:
            parsed.put_documents(cache, docs_key, docs)
    result.load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    split, result.splitter_name = split_documents(
        docs,
        splitter_name=options.splitter_name,
        chunk_size=options.chunk_size,
        chunk_overlap=options.chunk_overlap,
        zh_title=options.zh_title_enhance,
        is_table=is_table,
        markdown_headers=list(options.markdown_headers) or None,
    )
    result.split_seconds = time.perf_counter() - started
    chunks = [(chunk.page_content, _json_safe_metadata(chunk)) for chunk in split]
    if cache is not None and chunks:
        parsed.put_chunks(cache, chunks_key, chunks, result.splitter_name)
    return chunks


def _chunking_fields(options: ChunkingOptions) -> dict:
    """What the splitter reads from the options (OCR fields belong to the documents' key)."""
    return {
        "chunk_size": options.chunk_size,
        "chunk_overlap": options.chunk_overlap,
        "zh_title_enhance": options.zh_title_enhance,
        "splitter_name": options.splitter_name,
        "markdown_headers": [list(h) for h in options.markdown_headers],
    }


def _client_message(text: str, task: ParseTask) -> str:
    # Exceptions quote the path they were given; clients see this text, so it names the file relatively.
    from server.knowledge_base.error_paths import relative_paths

    return relative_paths(text, task.path, task.file_name)


def _json_safe_metadata(chunk: Document) -> dict:
    return {k: v for k, v in chunk.metadata.items() if _json_safe(v) and k != "source"}


def _with_source(metadata: dict, file_name: str) -> dict:
    # The loaders' "source" is the path read; chunks name their file relatively, first as the loaders do.
    return {"source": file_name, **metadata}


def _json_safe(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def _init_worker() -> None:
    # Each worker parses one file at a time; keep its math libraries to one thread so
    # workers and the embedding model in the parent do not fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def parse_files(tasks: list[ParseTask], workers: int = 0, timeout: float | None = None) -> Iterator[ParsedFile]:
    """Yield parsed files as they finish; in parallel processes when it pays off.

    With a timeout (default: PARSE_TIMEOUT_SECONDS; 0 = none) files are parsed in supervised child
    processes, so a file that runs too long, or takes the child down, fails alone.
    """
    workers = workers or os.cpu_count() or 1
    timeout = _parse_timeout() if timeout is None else timeout
    if timeout > 0 and tasks:
        yield from _parse_supervised(tasks, workers, timeout)
        return
    if workers <= 1 or len(tasks) < MIN_FILES_FOR_POOL:
        for task in tasks:
            yield parse_file(task)
        return
    # Spawned, not forked: the parent may hold torch/OpenMP threads that fork would copy broken.
    context = get_context("spawn")
    # Big files first, so the slowest one does not start last.
    ordered = sorted(tasks, key=lambda t: _size_or_zero(t.path), reverse=True)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_init_worker
    ) as pool:
        # as_completed lets go of each future it yields; a list of them kept here would hold every
        # parsed file's chunks until the last one is done.
        for future in as_completed([pool.submit(parse_file, task) for task in ordered]):
            yield future.result()


def _size_or_zero(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---- supervised parsing: a wall-clock limit per file ------------------------------------------


def _parse_timeout() -> float:
    from configs import get_settings

    return get_settings().PARSE_TIMEOUT_SECONDS


def _parse_supervised(tasks: list[ParseTask], workers: int, timeout: float) -> Iterator[ParsedFile]:
    """Each of `workers` threads feeds files to its own child process and waits at most `timeout` per file."""
    count = min(workers, len(tasks))
    children: list[_ParserChild] = []
    local = threading.local()

    def parse(task: ParseTask) -> ParsedFile:
        if not hasattr(local, "child"):
            local.child = _ParserChild(all_cores=count == 1)
            children.append(local.child)
        return local.child.parse(task, timeout)

    ordered = sorted(tasks, key=lambda t: _size_or_zero(t.path), reverse=True)
    threads = ThreadPoolExecutor(max_workers=count)
    try:
        for future in as_completed([threads.submit(parse, task) for task in ordered]):
            yield future.result()
    finally:
        # Also when the caller stops early: files not started are dropped, running children are killed.
        threads.shutdown(wait=False, cancel_futures=True)
        for child in list(children):
            child.close()


class _ParserChild:
    """A spawned process that parses the files sent to it, one at a time, until stopped.

    C code (pdfium, lxml, zlib) cannot be interrupted from Python, so a file that overruns its time is
    stopped by killing its process; the next file gets a fresh one. A child the kernel kills for memory
    only loses its own file too.
    """

    def __init__(self, all_cores: bool) -> None:
        self.all_cores = all_cores
        self.process = None
        self.connection = None
        self.closed = False
        self.lock = threading.Lock()  # start and stop may come from two threads when parsing stops early

    def parse(self, task: ParseTask, timeout: float) -> ParsedFile:
        if self.process is None:
            try:
                self._start()
            except (RuntimeError, OSError, EOFError) as exc:
                self.stop()
                return ParsedFile(task.file_name, error=f"could not start a parser process: {exc}")
        self.connection.send(task)
        if not self.connection.poll(timeout):
            self.stop()
            message = f"parsing took longer than {timeout:g} seconds (PARSE_TIMEOUT_SECONDS) and was stopped"
            return ParsedFile(task.file_name, error=message)
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            process = self.process
            self.stop()
            code = process.exitcode if process is not None else None
            return ParsedFile(task.file_name, error=f"the parser process died on this file (exit code {code})")

    def _start(self) -> None:
        context = get_context("spawn")
        with self.lock:
            if self.closed:
                raise RuntimeError("parsing was stopped")
            self.connection, child_end = context.Pipe()
            self.process = context.Process(target=_serve_parser, args=(child_end, self.all_cores), daemon=True)
            self.process.start()
        child_end.close()
        # Start-up and imports do not count against the first file's time: the child says when it is ready.
        if not self.connection.poll(CHILD_START_SECONDS):
            self.stop()
            raise RuntimeError(f"the parser process did not start within {CHILD_START_SECONDS} seconds")
        self.connection.recv()

    def stop(self) -> None:
        with self.lock:
            if self.process is None:
                return
            self.process.kill()
            self.process.join()
            self.connection.close()
            self.process = self.connection = None

    def close(self) -> None:
        """Stop the child for good: a thread still about to start one will not."""
        with self.lock:
            self.closed = True
        self.stop()


def _serve_parser(connection, all_cores: bool) -> None:
    """The child's loop: parse each task received, send back its ParsedFile, until the pipe closes."""
    if all_cores:
        from server.knowledge_base.loaders.ocr import use_all_cores

        use_all_cores()
    else:
        _init_worker()
    import server.knowledge_base.loaders  # noqa: F401 - imported before "ready", so it is not timed
    import server.knowledge_base.splitters  # noqa: F401

    connection.send(None)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        connection.send(parse_file(task))
