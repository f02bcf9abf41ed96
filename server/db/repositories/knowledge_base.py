"""Knowledge-base rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

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
    epoch: str = ""  # which creation of this name the record is (see KnowledgeBaseModel.epoch)
    embed_fingerprint: str | None = None  # JSON, see embeddings/fingerprint.py


def new_epoch() -> str:
    return uuid.uuid4().hex


def fill_missing_epochs(session: Session) -> int:
    """Give rows made before schema 2 (or by Chatchat) an epoch; done once, by the schema upgrade."""
    rows = session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.epoch.is_(None))).all()
    for row in rows:
        row.epoch = new_epoch()
    return len(rows)


def _to_record(row: KnowledgeBaseModel) -> KnowledgeBaseRecord:
    created = row.create_time.isoformat(sep=" ", timespec="seconds") if row.create_time else None
    return KnowledgeBaseRecord(
        row.kb_name,
        row.kb_info or "",
        row.vs_type,
        row.embed_model,
        row.file_count,
        created,
        row.epoch or "",
        row.embed_fingerprint,
    )


def _row(session: Session, kb_name: str) -> KnowledgeBaseModel | None:
    return session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)).first()


def get_kb(kb_name: str) -> KnowledgeBaseRecord | None:
    with session_scope() as session:
        row = _row(session, kb_name)
        return _to_record(row) if row else None


def list_kbs() -> list[KnowledgeBaseRecord]:
    with session_scope() as session:
        rows = session.scalars(
            select(KnowledgeBaseModel).where(KnowledgeBaseModel.file_count > -1).order_by(KnowledgeBaseModel.id)
        )
        return [_to_record(row) for row in rows]


def insert_kb(kb_name: str, kb_info: str, vs_type: str, embed_model: str) -> KnowledgeBaseRecord | None:
    """Add the row of a new knowledge base with a fresh epoch; None if the name is taken."""
    with session_scope() as session:
        if _row(session, kb_name) is not None:
            return None
        row = KnowledgeBaseModel(
            kb_name=kb_name, kb_info=kb_info, vs_type=vs_type, embed_model=embed_model, epoch=new_epoch()
        )
        session.add(row)
        session.flush()
        return _to_record(row)


def set_embed_model(kb_name: str, embed_model: str) -> None:
    with session_scope() as session:
        row = _row(session, kb_name)
        if row is not None:
            row.embed_model = embed_model


def set_vs_type(kb_name: str, vs_type: str) -> None:
    with session_scope() as session:
        row = _row(session, kb_name)
        if row is not None:
            row.vs_type = vs_type


def set_embed_fingerprint(kb_name: str, fingerprint: str | None) -> None:
    with session_scope() as session:
        for row in session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)):
            row.embed_fingerprint = fingerprint


def update_kb_info(kb_name: str, kb_info: str) -> bool:
    with session_scope() as session:
        row = _row(session, kb_name)
        if row is None:
            return False
        row.kb_info = kb_info
        return True


def delete_kb_row(kb_name: str) -> None:
    with session_scope() as session:
        for row in session.scalars(select(KnowledgeBaseModel).where(KnowledgeBaseModel.kb_name == kb_name)):
            session.delete(row)
