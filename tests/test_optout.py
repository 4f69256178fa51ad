"""Per-user training opt-out (knowledge/optout.py) on SQLite and PostgreSQL.

.venv/bin/python -m pytest tests/test_optout.py -q
"""

from __future__ import annotations

from sqlalchemy import select

from knowledge.db import open_database
from knowledge.optout import opted_out_users, set_training_opt_out
from knowledge.tables import TrainingOptOut


def test_opt_out_and_back_in(db_url: str) -> None:
    engine = open_database(db_url)
    assert opted_out_users(engine) == set()
    set_training_opt_out(engine, "alice", True)
    set_training_opt_out(engine, "bob", True)
    assert opted_out_users(engine) == {"alice", "bob"}
    set_training_opt_out(engine, "alice", False)
    assert opted_out_users(engine) == {"bob"}
    set_training_opt_out(engine, "alice", False)  # opting in twice is fine
    assert opted_out_users(engine) == {"bob"}


def test_opting_out_twice_keeps_the_first_time(db_url: str) -> None:
    engine = open_database(db_url)
    set_training_opt_out(engine, "carol", True)
    table = TrainingOptOut.__table__
    with engine.connect() as conn:
        first = conn.execute(select(table.c.opted_out_at)).scalar_one()
    set_training_opt_out(engine, "carol", True)
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.opted_out_at)).scalars().all()
    assert rows == [first]
    assert opted_out_users(engine) == {"carol"}
