"""Engine, sessions and schema upgrades for the metadata database (any SQLAlchemy URL)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from configs import get_settings
from server.db.models import Base, SchemaInfo

logger = logging.getLogger(__name__)

# Bump when the models change; upgrades are additive (new tables, new nullable columns).
SCHEMA_VERSION = 3  # 3: knowledge_base.embed_fingerprint (2 is main's knowledge_base.epoch)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # WAL lets readers work while an ingestion writes; busy_timeout waits for the
            # other process instead of failing with "database is locked".
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    with _engines_lock:
        if url not in _engines:
            _engines[url] = _make_engine(url)
        return _engines[url]


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker(bind=get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def create_tables(url: str | None = None) -> int:
    """Create missing tables and add missing columns; return the schema version now in place."""
    url = url or get_settings().database_url
    # The locks module imports settings and paths only; imported here, as the repositories are, to keep
    # this module free of the knowledge-base package at import time.
    from server.knowledge_base.locks import SCHEMA_LOCK_KEY, advisory_lock, uses_postgresql

    if not uses_postgresql(url):
        return _create_tables(url)  # SQLite serialises schema changes itself
    # API servers on several hosts may start at once against a fresh database: concurrent CREATE TABLEs
    # fail there (duplicate types, existing relations), so one host does the schema work at a time.
    with advisory_lock(url, SCHEMA_LOCK_KEY):
        return _create_tables(url)


def _create_tables(url: str) -> int:
    engine = get_engine(url)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    with session_scope(url) as session:
        from server.db.repositories.knowledge_base import fill_missing_epochs  # the repositories import this module

        fill_missing_epochs(session)
        info = session.get(SchemaInfo, 1)
        if info is None:
            session.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
        elif info.version < SCHEMA_VERSION:
            logger.info("database schema upgraded from %s to %s", info.version, SCHEMA_VERSION)
            info.version = SCHEMA_VERSION
        elif info.version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database schema is version {info.version}, newer than this code ({SCHEMA_VERSION}): "
                "upgrade chatkb or point SQLALCHEMY_DATABASE_URI at another database"
            )
    return SCHEMA_VERSION


def _add_missing_columns(engine: Engine) -> None:
    """Upgrade tables made by older versions (or by Chatchat 0.2.x) in place."""
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        existing = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            column_type = column.type.compile(dialect=engine.dialect)
            with engine.begin() as connection:
                connection.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {column_type}'))
            logger.info("added column %s.%s", table.name, column.name)


def drop_tables(url: str | None = None) -> None:
    Base.metadata.drop_all(get_engine(url))
