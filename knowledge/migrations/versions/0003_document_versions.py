"""Document versions, tombstones and chunk citation metadata.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

- document: `version`, `status` ("current" | "superseded" | "deleted"), `superseded_at`,
  `deleted_at`, `deleted_by`. The sha256 index stops being unique over all rows: the same bytes may
  come back as a later version, so uniqueness holds among current versions only (partial unique
  indexes on sha256 and on name, which SQLite >= 3.8 and PostgreSQL both support).
- chunk: `heading`, `page_start`, `page_end` (kept for citations).

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IS_CURRENT = sa.text("status = 'current'")


def upgrade() -> None:
    # ADD COLUMN works in place on SQLite too; server defaults fill the existing rows.
    op.add_column(
        "document", sa.Column("version", sa.Integer(), nullable=False, server_default="1")
    )
    op.add_column(
        "document", sa.Column("status", sa.String(), nullable=False, server_default="current")
    )
    op.add_column("document", sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("document", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("document", sa.Column("deleted_by", sa.String(), nullable=True))
    op.create_index("ix_document_status", "document", ["status"], unique=False)
    op.drop_index("ix_document_sha256", table_name="document")
    op.create_index("ix_document_sha256", "document", ["sha256"], unique=False)
    for column in ("name", "sha256"):
        op.create_index(
            f"ux_document_current_{column}",
            "document",
            [column],
            unique=True,
            sqlite_where=_IS_CURRENT,
            postgresql_where=_IS_CURRENT,
        )
    op.add_column("chunk", sa.Column("heading", sa.String(), nullable=True))
    op.add_column("chunk", sa.Column("page_start", sa.Integer(), nullable=True))
    op.add_column("chunk", sa.Column("page_end", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Only exact when every row is current (older schemas cannot hold versions or tombstones).
    for column in ("page_end", "page_start", "heading"):
        with op.batch_alter_table("chunk") as batch:
            batch.drop_column(column)
    op.drop_index("ux_document_current_sha256", table_name="document")
    op.drop_index("ux_document_current_name", table_name="document")
    op.drop_index("ix_document_sha256", table_name="document")
    op.create_index("ix_document_sha256", "document", ["sha256"], unique=True)
    op.drop_index("ix_document_status", table_name="document")
    with op.batch_alter_table("document") as batch:
        for column in ("deleted_by", "deleted_at", "superseded_at", "status", "version"):
            batch.drop_column(column)
