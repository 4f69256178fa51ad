"""Per-user training opt-out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

- training_opt_out: `user` (primary key), `opted_out_at` (see knowledge/optout.py).

Written out by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trainingoptout",
        sa.Column("user", sa.String(), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user"),
    )


def downgrade() -> None:
    op.drop_table("trainingoptout")
