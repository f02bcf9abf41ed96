"""Search a knowledge base from the agent."""

from __future__ import annotations

from configs import get_settings
from server.knowledge_base import paths, service


def search_knowledge_base(query: str, knowledge_base_name: str = "") -> str:
    kb_name = knowledge_base_name or get_settings().DEFAULT_KNOWLEDGE_BASE
    try:
        paths.validate_kb_name(kb_name)
    except paths.UnsafeName as exc:
        raise ValueError(str(exc))
    if not service.kb_exists(kb_name):
        names = ", ".join(kb.kb_name for kb in service.list_kbs()) or "(none)"
        raise ValueError(f"knowledge base {kb_name!r} does not exist; available: {names}")
    hits = service.search(kb_name, query)
    if not hits:
        return f"nothing relevant found in knowledge base {kb_name!r}"
    return "\n\n".join(f"[{hit.chunk.metadata.get('source', '')}] {hit.chunk.page_content}" for hit in hits)
