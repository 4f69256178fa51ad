"""Knowledge tables: document, chunk, documenttext, exchange, feedback.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out by hand (not imported from `knowledge.tables`) so this revision keeps describing the
schema as it was, whatever the models become later. tests/test_db.py checks that the models and
the migrations agree. Datetimes are `timezone=True`: SQLModel maps `datetime` fields to its
UTCDateTime (aware, UTC), which is TIMESTAMP WITH TIME ZONE on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("media_type", sa.String(), nullable=False),
        sa.Column("visibility", sa.String(), nullable=False),
        sa.Column("groups", sa.String(), nullable=False),
        sa.Column("uploaded_by", sa.String(), nullable=True),
        sa.Column("n_chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_document_name", "document", ["name"], unique=False)
    op.create_index("ix_document_sha256", "document", ["sha256"], unique=True)

    op.create_table(
        "chunk",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["document.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_chunk_document_id", "chunk", ["document_id"], unique=False)

    op.create_table(
        "documenttext",
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["document.id"]),
        sa.PrimaryKeyConstraint("document_id"),
    )

    op.create_table(
        "exchange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(), nullable=True),
        sa.Column("messages_json", sa.String(), nullable=False),
        sa.Column("answer", sa.String(), nullable=False),
        sa.Column("adapter_version", sa.String(), nullable=False),
        sa.Column("chunk_ids_json", sa.String(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_exchange_user", "exchange", ["user"], unique=False)
    op.create_index("ix_exchange_adapter_version", "exchange", ["adapter_version"], unique=False)

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exchange_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(), nullable=False),
        sa.Column("user", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["exchange_id"], ["exchange.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_feedback_exchange_id", "feedback", ["exchange_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_feedback_exchange_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_exchange_adapter_version", table_name="exchange")
    op.drop_index("ix_exchange_user", table_name="exchange")
    op.drop_table("exchange")
    op.drop_table("documenttext")
    op.drop_index("ix_chunk_document_id", table_name="chunk")
    op.drop_table("chunk")
    op.drop_index("ix_document_sha256", table_name="document")
    op.drop_index("ix_document_name", table_name="document")
    op.drop_table("document")
