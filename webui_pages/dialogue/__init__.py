"""The dialogue page (chat in every mode)."""

from webui_pages.dialogue.page import dialogue_page

__all__ = ["dialogue_page"]
