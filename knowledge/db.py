"""Database engine and schema setup (SQLite by default, PostgreSQL via `PROTEGE_DATABASE_URL`).

engine = open_database(settings.db_url)   # creates / upgrades the schema with Alembic
with Session(engine) as session: ...
private_dirs(settings)                    # the data folders, owner-only, before first use

A SQLite file is created readable by its owner only (0600; SQLite gives its -wal and -shm files
the same mode), in a folder created 0700: it holds every document's text and every chat.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlmodel import create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x70726F74  # "prot": the advisory lock that serializes schema upgrades


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (serving) never block the trainer
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # created owner-only here (an empty file is a valid SQLite database)
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """A file lock next to a SQLite database (SQLite is always local, so a file lock suffices)."""
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        yield
        return
    with os.fdopen(os.open(f"{path}.migrate.lock", os.O_CREAT | os.O_RDWR, 0o600), "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent, safe to run concurrently).

    Processes starting together on a fresh database (two schedulers, the API and a scheduler)
    would otherwise both see "no tables" and the slower one fail on "table already exists": a
    PostgreSQL advisory lock (held until the migration's transaction ends) or, on SQLite, a file
    lock makes them take turns; the later ones then find the schema at head and do nothing.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _sqlite_migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def private_dirs(settings: Any) -> None:
    """Create the data folders owner-only (0700) if missing: home, adapters, chroma, jobs.

    Folders that exist keep their mode (an operator may have chosen it, e.g. a shared volume).
    """
    for folder in (settings.home, settings.adapters_dir, settings.chroma_dir, settings.jobs_dir):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)


@cache
def open_database(url: str) -> Engine:
    """One engine per URL per process, schema upgraded on first open."""
    engine = make_engine(url)
    upgrade_schema(engine)
    return engine
