"""Conversations and their messages (tables ``conversation`` and ``message``, as in Chatchat 0.2.x)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from server.db.engine import session_scope
from server.db.models import ConversationModel, MessageModel

# Column sizes of the 0.2.x schema; other databases than SQLite enforce them.
MAX_QUERY_CHARS = 4096
MAX_RESPONSE_CHARS = 4096
MAX_NAME_CHARS = 50
MAX_REASON_CHARS = 255


@dataclass(frozen=True)
class MessageRecord:
    id: str
    conversation_id: str
    chat_type: str
    query: str
    response: str
    meta_data: dict
    feedback_score: int
    feedback_reason: str
    create_time: datetime | None


def _to_record(row: MessageModel) -> MessageRecord:
    return MessageRecord(
        row.id,
        row.conversation_id,
        row.chat_type,
        row.query,
        row.response or "",
        dict(row.meta_data or {}),
        row.feedback_score if row.feedback_score is not None else -1,
        row.feedback_reason or "",
        row.create_time,
    )


def ensure_conversation(conversation_id: str, chat_type: str, name: str = "") -> None:
    """Record the conversation the first time a message arrives for it."""
    if not conversation_id:
        return
    with session_scope() as session:
        if session.get(ConversationModel, conversation_id) is None:
            session.add(
                ConversationModel(
                    id=conversation_id, name=name[:MAX_NAME_CHARS], chat_type=chat_type, create_time=datetime.now()
                )
            )


def add_message(
    conversation_id: str,
    chat_type: str,
    query: str,
    response: str = "",
    meta_data: dict | None = None,
    message_id: str | None = None,
) -> str:
    message_id = message_id or uuid.uuid4().hex
    with session_scope() as session:
        session.add(
            MessageModel(
                id=message_id,
                conversation_id=conversation_id or "",
                chat_type=chat_type,
                query=query[:MAX_QUERY_CHARS],
                response=response[:MAX_RESPONSE_CHARS],
                meta_data=meta_data or {},
                # Python's clock keeps microseconds, so messages of one second still sort in order.
                create_time=datetime.now(),
            )
        )
    return message_id


def update_response(message_id: str, response: str, meta_data: dict | None = None) -> bool:
    with session_scope() as session:
        row = session.get(MessageModel, message_id)
        if row is None:
            return False
        row.response = response[:MAX_RESPONSE_CHARS]
        if meta_data is not None:
            row.meta_data = {**(row.meta_data or {}), **meta_data}
        return True


def get_message(message_id: str) -> MessageRecord | None:
    with session_scope() as session:
        row = session.get(MessageModel, message_id)
        return _to_record(row) if row else None


def recent_messages(conversation_id: str, limit: int) -> list[MessageRecord]:
    """The last ``limit`` answered messages of a conversation, oldest first."""
    if not conversation_id or limit <= 0:
        return []
    with session_scope() as session:
        rows = session.scalars(
            select(MessageModel)
            .where(MessageModel.conversation_id == conversation_id, MessageModel.response != "")
            .order_by(MessageModel.create_time.desc())
            .limit(limit)
        ).all()
        return [_to_record(row) for row in reversed(rows)]


def set_feedback(message_id: str, score: int, reason: str) -> bool:
    with session_scope() as session:
        row = session.get(MessageModel, message_id)
        if row is None:
            return False
        row.feedback_score = score
        row.feedback_reason = reason[:MAX_REASON_CHARS]
        return True


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    name: str
    chat_type: str
    create_time: datetime | None


def list_conversations() -> list[ConversationRecord]:
    """Every stored conversation, newest first."""
    with session_scope() as session:
        rows = session.scalars(select(ConversationModel).order_by(ConversationModel.create_time.desc())).all()
        return [ConversationRecord(row.id, row.name or "", row.chat_type or "", row.create_time) for row in rows]


def all_messages(conversation_id: str) -> list[MessageRecord]:
    """Every message of a conversation, oldest first (the UI reloads a conversation with it)."""
    with session_scope() as session:
        rows = session.scalars(
            select(MessageModel)
            .where(MessageModel.conversation_id == conversation_id)
            .order_by(MessageModel.create_time)
        ).all()
        return [_to_record(row) for row in rows]


def rename_conversation(conversation_id: str, name: str, chat_type: str = "llm_chat") -> None:
    """Name a conversation, creating it when the UI names it before its first message."""
    with session_scope() as session:
        row = session.get(ConversationModel, conversation_id)
        if row is None:
            session.add(
                ConversationModel(
                    id=conversation_id, name=name[:MAX_NAME_CHARS], chat_type=chat_type, create_time=datetime.now()
                )
            )
        else:
            row.name = name[:MAX_NAME_CHARS]


def delete_conversation(conversation_id: str) -> bool:
    """Delete a conversation and its messages; False when there was nothing to delete."""
    with session_scope() as session:
        messages = session.execute(delete(MessageModel).where(MessageModel.conversation_id == conversation_id))
        conversations = session.execute(delete(ConversationModel).where(ConversationModel.id == conversation_id))
        return bool(messages.rowcount or conversations.rowcount)
