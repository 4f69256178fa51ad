"""Hardening (issue 11): aborted exchanges, ingest jobs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

- exchange: `aborted` (the client closed a streamed answer early; the exchange is still logged).
- ingestjob: large uploads ingested in the background (knowledge/tables.py, assistant/jobs.py).

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN works in place on SQLite too; the server default fills the existing rows.
    op.add_column(
        "exchange",
        sa.Column("aborted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "ingestjob",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("visibility", sa.String(), nullable=True),
        sa.Column("groups", sa.String(), nullable=False),
        sa.Column("uploaded_by", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("created_document", sa.Boolean(), nullable=True),
        sa.Column("replaced_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ingestjob_status", "ingestjob", ["status"])


def downgrade() -> None:
    op.drop_index("ix_ingestjob_status", table_name="ingestjob")
    op.drop_table("ingestjob")
    with op.batch_alter_table("exchange") as batch:
        batch.drop_column("aborted")
