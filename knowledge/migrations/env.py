"""Alembic environment for protege's one database (knowledge tables first, learner tables later).

Normally run by `knowledge.db.upgrade_schema(engine)`, which hands over an open connection in
`config.attributes["connection"]`. From the command line (e.g. to autogenerate a revision):

    .venv/bin/alembic -c knowledge/migrations/alembic.ini upgrade head
    .venv/bin/alembic -c knowledge/migrations/alembic.ini revision --autogenerate -m "what"

The URL then comes from `sqlalchemy.url` in the ini, else `PROTEGE_DATABASE_URL`, else the
default profile's database.
"""

from __future__ import annotations

import importlib
import os

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

config = context.config

# Modules whose SQLModel tables autogenerate should see. Listed in the ini (not imported here)
# so `knowledge` never imports `learner`; the learner adds "learner.tables" to the list.
_TABLE_MODULES = config.get_main_option("protege.table_modules") or "knowledge.tables"
for _module in _TABLE_MODULES.replace(",", " ").split():
    importlib.import_module(_module)

target_metadata = SQLModel.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _cli_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("PROTEGE_DATABASE_URL")
    if url:
        return url
    from knowledge.settings import load_settings

    return load_settings().db_url


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    url = _cli_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # upgrade_schema: its transaction, its engine settings
        _configure(connection)
        return
    from knowledge.db import make_engine

    engine = make_engine(_cli_url())
    try:
        with engine.begin() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
