"""Schema migrations on SQLite and on the real PostgreSQL server.

    .venv/bin/python -m pytest tests/test_db.py -q

PostgreSQL: `PROTEGE_TEST_POSTGRES_URL` (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Each test creates its own uniquely named database there and drops it afterwards; the tests are
skipped, saying why, when the server cannot be reached.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

import knowledge.tables  # noqa: F401  (puts the knowledge tables on SQLModel.metadata)
from knowledge.db import MIGRATIONS_DIR, make_engine, open_database, upgrade_schema

KNOWLEDGE_TABLES = {"document", "chunk", "documenttext", "exchange", "feedback", "trainingoptout"}


def head_revision() -> str:
    # The newest revision, whatever it is: later revisions (learner tables) must not break this.
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def knowledge_schema_diffs(engine: Engine) -> list:
    """What autogenerate would change in the knowledge tables: [] when models and migrations agree."""

    def ours(name: str | None, type_: str, *_: object) -> bool:
        return type_ != "table" or name in KNOWLEDGE_TABLES

    def ours_object(obj: object, name: str | None, type_: str, *_: object) -> bool:
        return ours(name, type_)

    with engine.connect() as connection:
        opts = {"compare_type": True, "include_name": ours, "include_object": ours_object}
        context = MigrationContext.configure(connection, opts=opts)
        return compare_metadata(context, SQLModel.metadata)


def check_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade_schema(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert KNOWLEDGE_TABLES <= tables
    upgrade_schema(engine)  # second run: nothing to do, nothing breaks
    upgrade_schema(engine)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) == tables
    assert knowledge_schema_diffs(engine) == []


def test_upgrade_schema_is_idempotent_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'protege.db'}")
    try:
        check_upgrade_is_idempotent(engine)
    finally:
        engine.dispose()


def test_open_database_caches_one_engine_per_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'protege.db'}"
    assert open_database(url) is open_database(url)
    assert current_revision(open_database(url)) == head_revision()


# -- PostgreSQL (the `postgres_url` fixture is in conftest.py) ---------------------------------------


@pytest.mark.postgres
def test_upgrade_schema_is_idempotent_on_postgres(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        check_upgrade_is_idempotent(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_knowledge_store_on_postgres(postgres_url: str, tmp_path: Path, monkeypatch) -> None:
    from knowledge.catalog import catalog, describe
    from knowledge.consistency import check_index
    from knowledge.errors import NotFoundError
    from knowledge.settings import Settings
    from knowledge.store import KnowledgeStore

    store = KnowledgeStore(Settings(home=tmp_path, database_url=postgres_url))
    try:
        text = b"# Parking\n\nStaff park in garage B; visitors use level 1 of garage A.\n"
        first = store.ingest_bytes("parking.md", text, uploaded_by="ana")
        assert first.created and not store.ingest_bytes("again.md", text).created
        [hit] = store.retrieve("where do visitors park?", k=1)
        assert hit.document_id == first.document.id and hit.title == "Parking"
        assert store.document_text(first.document.id) == text.decode()

        monkeypatch.setattr(store.index, "add", lambda *a, **k: (_ for _ in ()).throw(OSError))
        with pytest.raises(OSError):
            store.ingest_bytes("other.txt", b"Lunch is served from noon.")
        with pytest.raises(OSError):  # a failed new version keeps the old one whole
            store.ingest_bytes("parking.md", b"# Parking\n\nGarage C now.\n")
        monkeypatch.undo()
        assert [d.name for d in store.list_documents()] == ["parking.md"]
        assert check_index(store).consistent and store.index.count() == first.document.n_chunks

        # Versions and their partial unique indexes, on PostgreSQL.
        second = store.ingest_bytes("parking.md", b"# Parking\n\nGarage C now.\n", uploaded_by="bo")
        assert second.created and second.document.version == 2
        assert [v.version for v in describe(store, first.document.id).versions] == [2, 1]
        [hit] = store.retrieve("where do visitors park?", k=1)
        assert hit.document_id == second.document.id
        assert [info.name for info in catalog(store)] == ["parking.md"]

        deleted = store.delete_document(second.document.id)
        assert deleted.document_ids == [first.document.id, second.document.id]
        assert store.list_documents() == [] and store.index.count() == 0
        with pytest.raises(NotFoundError):
            store.get_document(first.document.id)
        fresh = store.ingest_bytes("parking.md", text).document  # the same bytes may return
        assert fresh.id > second.document.id and fresh.version == 1
    finally:
        store.engine.dispose()


def test_upgrade_from_0002_keeps_documents_as_current_versions(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0002")
            connection.execute(
                text(
                    "INSERT INTO document (id, name, title, sha256, size_bytes, media_type, "
                    "visibility, groups, n_chunks, created_at) VALUES (1, 'a.md', 'A', 'abc', 3, "
                    "'text/markdown', 'company', '', 0, CURRENT_TIMESTAMP)"
                )
            )
        upgrade_schema(engine)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT version, status FROM document")).one()
        assert tuple(row) == (1, "current")
    finally:
        engine.dispose()


def test_concurrent_first_upgrades_take_turns(db_url: str) -> None:
    """Processes starting together on a fresh database all end up at head, none fails."""
    import subprocess
    import sys

    code = f"from knowledge.db import open_database; open_database({db_url!r})"
    children = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [c.communicate(timeout=300)[1] for c in children]
    assert [c.returncode for c in children] == [0, 0, 0], errors
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
