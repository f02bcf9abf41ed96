"""Stored conversations for the web UI (an extension: Chatchat 0.2.x kept them only in the browser).

Listing, reloading, renaming and deleting conversations lets a user switch devices or reload
the page without losing a conversation; the messages are the ones /chat/chat already stores.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import Body, Query

from server.db.repositories import conversation as conversation_repo
from server.responses import BaseResponse

ConversationId = Annotated[str, Body(min_length=1, max_length=32, description="会话 ID")]


def _jsonable(record) -> dict:
    data = asdict(record)
    data["create_time"] = record.create_time.isoformat(sep=" ", timespec="seconds") if record.create_time else None
    return data


def list_conversations() -> BaseResponse:
    return BaseResponse(data=[_jsonable(c) for c in conversation_repo.list_conversations()])


def conversation_messages(
    conversation_id: Annotated[str, Query(min_length=1, max_length=32, description="会话 ID")],
) -> BaseResponse:
    return BaseResponse(data=[_jsonable(m) for m in conversation_repo.all_messages(conversation_id)])


def rename_conversation(
    conversation_id: ConversationId,
    name: Annotated[str, Body(min_length=1, max_length=conversation_repo.MAX_NAME_CHARS, description="新名称")],
) -> BaseResponse:
    conversation_repo.rename_conversation(conversation_id, name)
    return BaseResponse(msg=f"会话已重命名为 {name}")


def delete_conversation(conversation_id: Annotated[str, Body(min_length=1, max_length=32, embed=True)]) -> BaseResponse:
    if not conversation_repo.delete_conversation(conversation_id):
        return BaseResponse(code=404, msg=f"未找到会话 {conversation_id}")
    return BaseResponse(msg=f"已删除会话 {conversation_id}")
