"""``/other/completion`` lives in the chat area; server/api.py mounts this module's router at the root."""

from server.chat.router import completion_router as router

__all__ = ["router"]
