"""API keys (assistant/auth.py, table in assistant/tables.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

- apikey: `id`, `prefix` (unique), `key_hash` (unique, sha256 hex), `user`, `role`, `groups`,
  `created_at`, `revoked_at`.

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "apikey",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("key_hash", sa.String(), nullable=False),
        sa.Column("user", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("groups", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_apikey_user", "apikey", ["user"])


def downgrade() -> None:
    op.drop_index("ix_apikey_user", table_name="apikey")
    op.drop_table("apikey")
