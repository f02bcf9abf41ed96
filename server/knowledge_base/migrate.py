"""Folder ⇄ database operations behind init_database.py: rebuild, increment, update, prune, import."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect

from server.db.engine import get_engine, session_scope
from server.db.models import Base
from server.db.repositories import knowledge_base as kb_repo
from server.db.repositories import knowledge_file as file_repo
from server.knowledge_base import paths, service
from server.knowledge_base.ingest import ChunkingOptions
from server.knowledge_base.service import IngestReport, ProgressCallback

logger = logging.getLogger(__name__)


def recreate(kb_name: str, embed_model: str | None, options: ChunkingOptions, progress: ProgressCallback | None):
    return service.recreate_vector_store(kb_name, options, embed_model=embed_model, progress=progress)


def increment(kb_name: str, embed_model: str | None, options: ChunkingOptions, progress: ProgressCallback | None):
    """Add files present in content/ but unknown to the database (resumes a killed run)."""
    service.ensure_kb(kb_name, embed_model)
    return service.ingest_files(kb_name, list(service.iter_files_to_increment(kb_name)), options, progress=progress)


def update_in_db(kb_name: str, embed_model: str | None, options: ChunkingOptions, progress: ProgressCallback | None):
    """Re-vectorise the files the database knows, from their copies in content/."""
    service.ensure_kb(kb_name, embed_model)
    names = [n for n in file_repo.list_file_names(kb_name) if paths.file_path(kb_name, n).is_file()]
    return service.ingest_files(kb_name, names, options, progress=progress)


def prune_db(kb_name: str) -> list[str]:
    """Forget files that were deleted from content/; returns their names."""
    if not service.kb_exists(kb_name):
        return []
    on_disk = set(paths.list_content_files(kb_name))
    gone = [name for name in file_repo.list_file_names(kb_name) if name not in on_disk]
    if gone:
        service.delete_files(kb_name, gone)
    failed_and_gone = [name for name in file_repo.list_errors(kb_name) if name not in on_disk]
    if failed_and_gone:
        file_repo.delete_files(kb_name, failed_and_gone)
    return gone + failed_and_gone


def prune_folder(kb_name: str) -> list[str]:
    """Delete files in content/ that the database does not know; returns their names.

    Files whose ingestion failed are known too (their error is recorded): a user should fix
    or remove them, not lose them to a clean-up.
    """
    if not service.kb_exists(kb_name):
        return []
    known = set(file_repo.list_file_names(kb_name)) | set(file_repo.list_errors(kb_name))
    removed = []
    for name in paths.list_content_files(kb_name):
        if name not in known:
            paths.file_path(kb_name, name).unlink()
            removed.append(name)
    return removed


def move_kb(kb_name: str, vs_type: str) -> dict[str, int]:
    """Copy a knowledge base's store and summary store to another store type, without embedding again,
    check the counts, then switch the knowledge base to it; returns the chunks copied per store.

    Each source store stays locked for writing while it is copied (other writers wait); a summary made
    while the chunks are being copied is not carried over. The source keeps its data afterwards (delete
    it by hand, or move back: the target is emptied before each copy)."""
    from server.knowledge_base.embeddings import get_embeddings
    from server.knowledge_base.summary import summary_store_location
    from server.knowledge_base.vector_stores import SUPPORTED_VS_TYPES, get_store_cache, open_store
    from server.knowledge_base.vector_stores.transfer import copy_store

    record = service.get_kb(kb_name)
    if vs_type not in SUPPORTED_VS_TYPES:
        raise ValueError(f"unsupported vector store type '{vs_type}' (supported: {', '.join(SUPPORTED_VS_TYPES)})")
    if vs_type == record.vs_type:
        raise ValueError(f"knowledge base {kb_name} already uses {vs_type}")
    dimension = get_embeddings(record.embed_model).dimension
    cache = get_store_cache()
    (main_key, main_folder), (summary_key, summary_folder) = (
        service._store_key(kb_name, record.embed_model),
        summary_store_location(kb_name, record.embed_model),
    )
    copied = {}
    # One store locked at a time (the cache may hold only one): summaries first, then the chunks,
    # whose lock is held until the knowledge base has switched, so no chunk written meanwhile is lost.
    # The knowledge base's write lock around both: a delete waits, and a deleted one is not copied.
    with service.writing_to(record):
        with cache.write(summary_key, summary_folder, dimension, save=False, vs_type=record.vs_type) as source:
            target = open_store(vs_type, summary_key, summary_folder, dimension)
            copied[summary_key[1]] = copy_store(source, target, summary_folder)
        with cache.write(main_key, main_folder, dimension, save=False, vs_type=record.vs_type) as source:
            target = open_store(vs_type, main_key, main_folder, dimension)
            copied[main_key[1]] = copy_store(source, target, main_folder)
            kb_repo.set_vs_type(kb_name, vs_type)
        cache.forget_kb(kb_name)
    return copied


def import_db(source: Path) -> dict[str, int]:
    """Copy rows of every table and column both databases have from another SQLite info.db."""
    if not source.is_file():
        raise FileNotFoundError(f"no database file at {source}")
    engine = get_engine()
    target_columns = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in Base.metadata.tables}
    copied: dict[str, int] = {}
    connection = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        source_tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table_name, table in Base.metadata.tables.items():
            if table_name not in source_tables or table_name == "schema_info":
                continue
            rows = [dict(row) for row in connection.execute(f'SELECT * FROM "{table_name}"')]  # noqa: S608
            columns = target_columns[table_name]
            cleaned = [_coerce_row(table, {k: v for k, v in row.items() if k in columns}) for row in rows]
            with session_scope() as session:
                if cleaned:
                    session.execute(table.insert(), cleaned)
            copied[table_name] = len(cleaned)
    finally:
        connection.close()
    return copied


def _coerce_row(table, row: dict) -> dict:
    """SQLite hands back text for datetimes and JSON; give SQLAlchemy the Python types it expects."""
    import json
    from datetime import datetime

    for column in table.columns:
        value = row.get(column.name)
        if not isinstance(value, str):
            continue
        type_name = type(column.type).__name__
        if type_name == "DateTime":
            try:
                row[column.name] = datetime.fromisoformat(value)
            except ValueError:
                row.pop(column.name)
        elif type_name == "JSON":
            try:
                row[column.name] = json.loads(value)
            except ValueError:
                row[column.name] = {}
    return row


MODES: dict[str, Callable[..., IngestReport]] = {
    "recreate_vs": recreate,
    "update_in_db": update_in_db,
    "increment": increment,
}
