"""Metadata tables. Names and columns of Chatchat 0.2.x are kept (so its info.db imports);
columns added since are nullable or defaulted, and `schema_info` records the version."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=func.now(), onupdate=func.now())


class KnowledgeBaseModel(Base):
    __tablename__ = "knowledge_base"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_name: Mapped[str] = mapped_column(String(50), index=True)
    kb_info: Mapped[str | None] = mapped_column(String(200), default="")
    vs_type: Mapped[str] = mapped_column(String(50), default="faiss")
    embed_model: Mapped[str] = mapped_column(String(50))
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    create_time: Mapped[datetime] = mapped_column(DateTime, default=func.now())
    # added in schema 2: a new random value each time a knowledge base of this name is created, so
    # work started on a deleted one cannot write into a new one of the same name (ids get reused)
    epoch: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)
    # added in schema 3: JSON {name, dimension, weights} of the model that made its vectors (drift guard)
    embed_fingerprint: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)


class KnowledgeFileModel(Base):
    __tablename__ = "knowledge_file"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_name: Mapped[str] = mapped_column(String(255))
    file_ext: Mapped[str] = mapped_column(String(10))
    kb_name: Mapped[str] = mapped_column(String(50), index=True)
    document_loader_name: Mapped[str] = mapped_column(String(50), default="")
    text_splitter_name: Mapped[str] = mapped_column(String(50), default="")
    file_version: Mapped[int] = mapped_column(Integer, default=1)
    file_mtime: Mapped[float] = mapped_column(Float, default=0.0)
    file_size: Mapped[int] = mapped_column(Integer, default=0)
    custom_docs: Mapped[bool] = mapped_column(Boolean, default=False)
    docs_count: Mapped[int] = mapped_column(Integer, default=0)
    create_time: Mapped[datetime] = mapped_column(DateTime, default=func.now())
    # added in schema 1
    file_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)


class FileDocModel(Base):
    __tablename__ = "file_doc"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_name: Mapped[str] = mapped_column(String(50), index=True)
    file_name: Mapped[str] = mapped_column(String(255), index=True)
    doc_id: Mapped[str] = mapped_column(String(50), index=True)
    meta_data: Mapped[dict] = mapped_column(JSON, default=dict)


class FileErrorModel(Base):
    """Why a file could not be ingested (added in schema 1); cleared when it ingests."""

    __tablename__ = "file_error"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_name: Mapped[str] = mapped_column(String(50), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    error: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(DateTime, default=func.now())


class SummaryChunkModel(Base):
    __tablename__ = "summary_chunk"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_name: Mapped[str] = mapped_column(String(50), index=True)
    summary_context: Mapped[str] = mapped_column(String(255))
    summary_id: Mapped[str] = mapped_column(String(255))
    doc_ids: Mapped[str] = mapped_column(String(1024))
    meta_data: Mapped[dict] = mapped_column(JSON, default=dict)


class ConversationModel(Base):
    __tablename__ = "conversation"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    chat_type: Mapped[str] = mapped_column(String(50))
    create_time: Mapped[datetime] = mapped_column(DateTime, default=func.now())


class MessageModel(Base):
    __tablename__ = "message"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(32), index=True)
    chat_type: Mapped[str] = mapped_column(String(50))
    query: Mapped[str] = mapped_column(String(4096))
    response: Mapped[str] = mapped_column(String(4096))
    meta_data: Mapped[dict] = mapped_column(JSON, default=dict)
    feedback_score: Mapped[int] = mapped_column(Integer, default=-1)
    feedback_reason: Mapped[str] = mapped_column(String(255), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime, default=func.now())
