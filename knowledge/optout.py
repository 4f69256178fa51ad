"""Per-user training opt-out: users whose conversations must never be used for training.

    set_training_opt_out(engine, "alice", True)    # idempotent; False opts back in
    opted_out_users(engine)                         # {"alice"}

The learner reads `opted_out_users` when it selects conversations (learner/datasets.py); the API
sets it for the calling user. Tests: .venv/bin/python -m pytest tests/test_optout.py -q
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from knowledge.tables import TrainingOptOut, utcnow


def set_training_opt_out(engine: Engine, user: str, opted_out: bool) -> None:
    """Opt `user` out of (True) or back into (False) training; repeating a call changes nothing.

    Opting out keeps the first `opted_out_at`.
    """
    table = TrainingOptOut.__table__
    if not opted_out:
        with engine.begin() as conn:
            conn.execute(delete(table).where(table.c.user == user))
        return
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(user=user, opted_out_at=utcnow()))
    except IntegrityError:
        pass  # already opted out (possibly by a concurrent request): the row is what we want


def opted_out_users(engine: Engine) -> set[str]:
    """Every user who has opted out of training."""
    table = TrainingOptOut.__table__
    with engine.connect() as conn:
        return set(conn.execute(select(table.c.user)).scalars())
