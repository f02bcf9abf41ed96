"""Routes of the chat area: ``router`` is mounted at ``/chat``, ``completion_router`` at the root."""

from __future__ import annotations

from fastapi import APIRouter

from server.chat import (
    agent_chat,
    completion,
    conversations,
    file_chat,
    knowledge_base_chat,
    llm_chat,
    search_engine_chat,
)
from server.responses import BaseResponse

router = APIRouter(tags=["Chat"])
completion_router = APIRouter(tags=["Other"])

_SSE = "an event stream (text/event-stream); early errors (unknown model, knowledge base...) as a JSON envelope"

router.post("/chat", summary="Chat with the LLM; every exchange is stored", description=_SSE)(llm_chat.chat)
router.post("/feedback", summary="Score an answer of /chat/chat", response_model=BaseResponse)(llm_chat.feedback)
router.post("/knowledge_base_chat", summary="Answer from a knowledge base, with sources", description=_SSE)(
    knowledge_base_chat.knowledge_base_chat
)
router.post("/file_chat", summary="Answer from files uploaded with upload_temp_docs", description=_SSE)(
    file_chat.file_chat
)
router.post("/search_engine_chat", summary="Answer from a web search, with sources", description=_SSE)(
    search_engine_chat.search_engine_chat
)
router.post("/agent_chat", summary="A tool-using agent", description=_SSE)(agent_chat.agent_chat)

router.get("/conversations", summary="Stored conversations, newest first", response_model=BaseResponse)(
    conversations.list_conversations
)
router.get("/conversations/messages", summary="Every message of a conversation", response_model=BaseResponse)(
    conversations.conversation_messages
)
router.post("/conversations/rename", summary="Rename (or create) a conversation", response_model=BaseResponse)(
    conversations.rename_conversation
)
router.post("/conversations/delete", summary="Delete a conversation and its messages", response_model=BaseResponse)(
    conversations.delete_conversation
)

completion_router.post("/other/completion", summary="Plain text completion (raw text events)", description=_SSE)(
    completion.completion
)
