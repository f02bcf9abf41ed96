"""File rows, their chunk rows (vector ids) and their ingestion errors."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.db.engine import session_scope
from server.db.models import FileDocModel, FileErrorModel, KnowledgeBaseModel, KnowledgeFileModel


@dataclass(frozen=True)
class FileRecord:
    kb_name: str
    file_name: str
    file_ext: str
    file_version: int
    document_loader_name: str
    text_splitter_name: str
    file_mtime: float
    file_size: int
    file_hash: str | None
    custom_docs: bool
    docs_count: int
    create_time: str | None


@dataclass(frozen=True)
class ChunkRow:
    doc_id: str
    metadata: dict


@dataclass(frozen=True)
class FileIngestion:
    """What one ingested file writes to the database."""

    file_name: str
    loader_name: str
    splitter_name: str
    file_mtime: float
    file_size: int
    file_hash: str | None
    custom_docs: bool
    chunks: list[ChunkRow]


def _to_record(row: KnowledgeFileModel) -> FileRecord:
    created = row.create_time.isoformat(sep=" ", timespec="seconds") if row.create_time else None
    return FileRecord(
        row.kb_name,
        row.file_name,
        row.file_ext,
        row.file_version,
        row.document_loader_name,
        row.text_splitter_name,
        row.file_mtime,
        row.file_size,
        row.file_hash,
        bool(row.custom_docs),
        row.docs_count,
        created,
    )


def _file_query(kb_name: str, file_name: str):
    return select(KnowledgeFileModel).where(
        KnowledgeFileModel.kb_name == kb_name, KnowledgeFileModel.file_name == file_name
    )


def get_file(kb_name: str, file_name: str) -> FileRecord | None:
    with session_scope() as session:
        row = session.scalars(_file_query(kb_name, file_name)).first()
        return _to_record(row) if row else None


def list_files(kb_name: str) -> list[FileRecord]:
    with session_scope() as session:
        rows = session.scalars(
            select(KnowledgeFileModel).where(KnowledgeFileModel.kb_name == kb_name).order_by(KnowledgeFileModel.id)
        )
        return [_to_record(row) for row in rows]


def list_file_names(kb_name: str) -> list[str]:
    return [record.file_name for record in list_files(kb_name)]


def record_ingestions(kb_name: str, ingestions: list[FileIngestion]) -> None:
    """Replace the rows of these files with their new chunks, in one transaction."""
    with session_scope() as session:
        for item in ingestions:
            _replace_file(session, kb_name, item)
        _refresh_file_count(session, kb_name)


def _replace_file(session: Session, kb_name: str, item: FileIngestion) -> None:
    row = session.scalars(_file_query(kb_name, item.file_name)).first()
    if row is None:
        ext = item.file_name.rsplit(".", 1)[-1].lower() if "." in item.file_name else ""
        row = KnowledgeFileModel(kb_name=kb_name, file_name=item.file_name, file_ext=f".{ext}"[:10], file_version=0)
        session.add(row)
    row.document_loader_name = item.loader_name
    row.text_splitter_name = item.splitter_name
    row.file_mtime, row.file_size, row.file_hash = item.file_mtime, item.file_size, item.file_hash
    row.custom_docs = item.custom_docs
    row.docs_count = len(item.chunks)
    row.file_version = (row.file_version or 0) + 1
    session.execute(
        delete(FileDocModel).where(FileDocModel.kb_name == kb_name, FileDocModel.file_name == item.file_name)
    )
    session.add_all(
        FileDocModel(kb_name=kb_name, file_name=item.file_name, doc_id=chunk.doc_id, meta_data=chunk.metadata)
        for chunk in item.chunks
    )
    session.execute(
        delete(FileErrorModel).where(FileErrorModel.kb_name == kb_name, FileErrorModel.file_name == item.file_name)
    )


def delete_files(kb_name: str, file_names: list[str]) -> None:
    with session_scope() as session:
        for name in file_names:
            session.execute(
                delete(KnowledgeFileModel).where(
                    KnowledgeFileModel.kb_name == kb_name, KnowledgeFileModel.file_name == name
                )
            )
            session.execute(delete(FileDocModel).where(FileDocModel.kb_name == kb_name, FileDocModel.file_name == name))
            session.execute(
                delete(FileErrorModel).where(FileErrorModel.kb_name == kb_name, FileErrorModel.file_name == name)
            )
        _refresh_file_count(session, kb_name)


def delete_all_files(kb_name: str) -> None:
    with session_scope() as session:
        session.execute(delete(KnowledgeFileModel).where(KnowledgeFileModel.kb_name == kb_name))
        session.execute(delete(FileDocModel).where(FileDocModel.kb_name == kb_name))
        session.execute(delete(FileErrorModel).where(FileErrorModel.kb_name == kb_name))
        _refresh_file_count(session, kb_name)


def _refresh_file_count(session: Session, kb_name: str) -> None:
    session.flush()
    count = session.scalar(select(func.count()).where(KnowledgeFileModel.kb_name == kb_name))
    kb = session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)).first()
    if kb is not None:
        kb.file_count = count or 0


def list_chunks(kb_name: str, file_name: str | None = None, metadata: dict | None = None) -> list[ChunkRow]:
    """Chunk rows of a knowledge base, optionally of one file and with first-level metadata equal."""
    with session_scope() as session:
        query = select(FileDocModel).where(FileDocModel.kb_name == kb_name)
        if file_name:
            query = query.where(FileDocModel.file_name == file_name)
        rows = [
            ChunkRow(row.doc_id, dict(row.meta_data or {})) for row in session.scalars(query.order_by(FileDocModel.id))
        ]
    if metadata:
        rows = [row for row in rows if all(row.metadata.get(k) == v for k, v in metadata.items())]
    return rows


def update_chunk_metadata(kb_name: str, updates: dict[str, dict]) -> None:
    with session_scope() as session:
        for doc_id, metadata in updates.items():
            for row in session.scalars(
                select(FileDocModel).where(FileDocModel.kb_name == kb_name, FileDocModel.doc_id == doc_id)
            ):
                row.meta_data = metadata


def record_error(kb_name: str, file_name: str, error: str) -> None:
    with session_scope() as session:
        session.execute(
            delete(FileErrorModel).where(FileErrorModel.kb_name == kb_name, FileErrorModel.file_name == file_name)
        )
        session.add(FileErrorModel(kb_name=kb_name, file_name=file_name, error=error[:4000]))


def list_errors(kb_name: str) -> dict[str, str]:
    with session_scope() as session:
        rows = session.scalars(select(FileErrorModel).where(FileErrorModel.kb_name == kb_name))
        return {row.file_name: row.error for row in rows}


def chunk_ids_by_file(kb_name: str) -> dict[str, list[str]]:
    """Every file's chunk ids as the database lists them (files without chunks included)."""
    with session_scope() as session:
        by_file: dict[str, list[str]] = {
            name: []
            for name in session.scalars(
                select(KnowledgeFileModel.file_name).where(KnowledgeFileModel.kb_name == kb_name)
            )
        }
        rows = session.execute(
            select(FileDocModel.file_name, FileDocModel.doc_id).where(FileDocModel.kb_name == kb_name)
        )
        for file_name, doc_id in rows:
            by_file.setdefault(file_name, []).append(doc_id)
        return by_file


def _chunk_counts(session: Session, kb_name: str) -> dict[str, int]:
    query = select(FileDocModel.file_name, func.count()).where(FileDocModel.kb_name == kb_name)
    return dict(session.execute(query.group_by(FileDocModel.file_name)).all())


def wrong_counts(kb_name: str) -> list[str]:
    """Files whose docs_count differs from their chunk rows (and "" if the knowledge base's file_count is off)."""
    with session_scope() as session:
        chunk_counts = _chunk_counts(session, kb_name)
        files = session.scalars(select(KnowledgeFileModel).where(KnowledgeFileModel.kb_name == kb_name)).all()
        wrong = [row.file_name for row in files if row.docs_count != chunk_counts.get(row.file_name, 0)]
        kb = session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)).first()
        if kb is not None and kb.file_count != len(files):
            wrong.append("")
        return wrong


def fix_counts(kb_name: str) -> None:
    with session_scope() as session:
        chunk_counts = _chunk_counts(session, kb_name)
        for row in session.scalars(select(KnowledgeFileModel).where(KnowledgeFileModel.kb_name == kb_name)):
            row.docs_count = chunk_counts.get(row.file_name, 0)
        _refresh_file_count(session, kb_name)


def delete_chunk_rows(kb_name: str, doc_ids: list[str]) -> None:
    """Forget single chunks (whose vectors are gone); fix_counts brings the files' counts up to date."""
    if not doc_ids:
        return
    with session_scope() as session:
        session.execute(delete(FileDocModel).where(FileDocModel.kb_name == kb_name, FileDocModel.doc_id.in_(doc_ids)))
