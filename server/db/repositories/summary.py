"""Rows of ``summary_chunk``: one LLM summary per file of a knowledge base (0.2.x table and columns)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select

from server.db.engine import session_scope
from server.db.models import SummaryChunkModel


@dataclass(frozen=True)
class SummaryRecord:
    kb_name: str
    summary_id: str
    summary_context: str
    doc_ids: list[str]
    metadata: dict = field(default_factory=dict)

    @property
    def file_name(self) -> str | None:
        return self.metadata.get("file_name")


def _to_record(row: SummaryChunkModel) -> SummaryRecord:
    doc_ids = [d for d in (row.doc_ids or "").split(",") if d]
    return SummaryRecord(row.kb_name, row.summary_id, row.summary_context, doc_ids, dict(row.meta_data or {}))


def list_summaries(kb_name: str) -> list[SummaryRecord]:
    with session_scope() as session:
        rows = session.scalars(
            select(SummaryChunkModel).where(SummaryChunkModel.kb_name == kb_name).order_by(SummaryChunkModel.id)
        )
        return [_to_record(row) for row in rows]


def replace_file_summary(kb_name: str, file_name: str, summary_id: str, text: str, doc_ids: list[str], meta: dict):
    """Store the summary of one file, dropping the file's previous summary in the same transaction."""
    with session_scope() as session:
        for row in session.scalars(select(SummaryChunkModel).where(SummaryChunkModel.kb_name == kb_name)):
            if (row.meta_data or {}).get("file_name") == file_name:
                session.delete(row)
        session.add(
            SummaryChunkModel(
                kb_name=kb_name,
                summary_context=text,
                summary_id=summary_id,
                doc_ids=",".join(doc_ids),
                meta_data={**meta, "file_name": file_name},
            )
        )


def delete_summaries(kb_name: str) -> None:
    with session_scope() as session:
        session.execute(delete(SummaryChunkModel).where(SummaryChunkModel.kb_name == kb_name))
