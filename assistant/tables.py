"""SQL tables owned by `assistant`: API keys (assistant/auth.py).

Same database and SQLModel metadata as the rest of the app; the migration is
knowledge/migrations/versions/0006_api_keys.py (all migrations live there).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from knowledge.tables import utcnow


class ApiKey(SQLModel, table=True):
    """One API key. The secret itself is never stored: only its SHA-256 and a short prefix."""

    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(unique=True)  # the key's first characters: shown in listings, revoke by it
    key_hash: str = Field(unique=True)  # sha256 hex of the whole key (see assistant/auth.py)
    user: str = Field(index=True)  # logged with every exchange, owns feedback and opt-out
    role: str = "user"  # "user" | "admin"
    groups: str = ""  # comma-separated groups: which group documents the key may retrieve
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
