"""Eval items written from the documents (learner/evals/written.py, table in learner/tables.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

- evalitem: `id`, `document_id` (indexed), `set_name`, `question`, `answer`, `origin`,
  `created_at`, `updated_at`.

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evalitem",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("set_name", sa.String(), nullable=False),
        sa.Column("question", sa.String(), nullable=False),
        sa.Column("answer", sa.String(), nullable=False),
        sa.Column("origin", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_evalitem_document_id", "evalitem", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_evalitem_document_id", table_name="evalitem")
    op.drop_table("evalitem")
