"""Knowledge-base rows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from server.db.engine import session_scope
from server.db.models import KnowledgeBaseModel


@dataclass(frozen=True)
class KnowledgeBaseRecord:
    kb_name: str
    kb_info: str
    vs_type: str
    embed_model: str
    file_count: int
    create_time: str | None
    embed_fingerprint: str | None = None  # JSON, see embeddings/fingerprint.py


def _to_record(row: KnowledgeBaseModel) -> KnowledgeBaseRecord:
    created = row.create_time.isoformat(sep=" ", timespec="seconds") if row.create_time else None
    return KnowledgeBaseRecord(
        row.kb_name, row.kb_info or "", row.vs_type, row.embed_model, row.file_count, created, row.embed_fingerprint
    )


def get_kb(kb_name: str) -> KnowledgeBaseRecord | None:
    with session_scope() as session:
        row = session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)).first()
        return _to_record(row) if row else None


def list_kbs() -> list[KnowledgeBaseRecord]:
    with session_scope() as session:
        rows = session.scalars(
            select(KnowledgeBaseModel).where(KnowledgeBaseModel.file_count > -1).order_by(KnowledgeBaseModel.id)
        )
        return [_to_record(row) for row in rows]


def upsert_kb(kb_name: str, kb_info: str, vs_type: str, embed_model: str) -> None:
    with session_scope() as session:
        row = session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)).first()
        if row is None:
            session.add(KnowledgeBaseModel(kb_name=kb_name, kb_info=kb_info, vs_type=vs_type, embed_model=embed_model))
        else:
            row.vs_type, row.embed_model = vs_type, embed_model
            row.kb_info = kb_info or row.kb_info


def set_embed_fingerprint(kb_name: str, fingerprint: str | None) -> None:
    with session_scope() as session:
        for row in session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)):
            row.embed_fingerprint = fingerprint


def update_kb_info(kb_name: str, kb_info: str) -> bool:
    with session_scope() as session:
        row = session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)).first()
        if row is None:
            return False
        row.kb_info = kb_info
        return True


def delete_kb_row(kb_name: str) -> None:
    with session_scope() as session:
        for row in session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)):
            session.delete(row)
