"""Helpers and texts shared by the web-UI tests."""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEBUI_SCRIPT = os.path.join(REPO_ROOT, "webui.py")

# Facts the tests ask about; the answers exist only in these files.
ALPHA_TEXT = (
    "Project Zephyr notes.\n\nThe Zephyr warehouse opens at seven in the morning.\n\n"
    "The Zephyr loading dock is behind building C."
)
BETA_TEXT = "Release checklist.\n\nEvery release of the Aurora service needs two reviewers and a changelog entry."


def new_app(timeout: float = 60):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(WEBUI_SCRIPT, default_timeout=timeout)


def texts(elements) -> list[str]:
    return [str(element.value) for element in elements]
