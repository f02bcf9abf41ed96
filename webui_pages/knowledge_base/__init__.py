"""The knowledge-base management page."""

from webui_pages.knowledge_base.page import knowledge_base_page

__all__ = ["knowledge_base_page"]
