"""Shared fixtures: every test session works in its own data root, never in the repository's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests run servers and pytest-xdist workers side by side on few cores. OpenMP's default spin-waiting
# then makes each torch call wait for threads that another process has descheduled: one query
# embedding took 380 ms instead of 6 ms. Passive waiting yields the core instead. Children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def kb_root(tmp_path, monkeypatch):
    """A fresh knowledge-base root and SQLite database for one test."""
    from configs import reload_settings
    from server.db.engine import create_tables, dispose_engines
    from server.knowledge_base.vector_stores import get_store_cache

    root = tmp_path / "knowledge_base"
    root.mkdir()
    monkeypatch.setenv("CHATCHAT_KB_ROOT_PATH", str(root))
    reload_settings()
    get_store_cache.cache_clear()
    create_tables()
    yield root
    dispose_engines()
    get_store_cache.cache_clear()
    monkeypatch.delenv("CHATCHAT_KB_ROOT_PATH")
    reload_settings()


# ---- real processes, shared by every test that needs them ------------------------------


@pytest.fixture(scope="session")
def llm_stack(tmp_path_factory):
    """Controller, default-model worker, embeddings worker and gateway on free ports, for the session.

    Yields a ``tests.helpers.stack.LLMStack`` (gateway_url, controller_url, model_name, env).
    """
    from tests.helpers.stack import start_llm_stack

    with start_llm_stack(tmp_path_factory.mktemp("llm_stack")) as stack:
        yield stack
