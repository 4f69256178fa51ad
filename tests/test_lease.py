"""One training cycle at a time, across processes, on SQLite and PostgreSQL (learner/lease.py).

    .venv/bin/python -m pytest tests/test_lease.py -q

Real processes race for the lease: the winner is held at the start of its first stage (a pause
hook, knowledge/faults.py) until the loser has given up, so the race is decided by the database
and not by timing.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from cycle_children import kill9, start, wait_for_marker, write_profile
from sqlalchemy import update
from sqlmodel import Session, select

from assistant.cli import main as cli_main
from knowledge.db import open_database
from knowledge.errors import CycleBusyError
from knowledge.tables import utcnow
from learner.lease import CYCLE, CycleLease, heartbeat, holder_of, try_acquire
from learner.tables import Lease, Run


def expire(engine, name: str = CYCLE) -> None:  # noqa: ANN001
    """Let the lease's time run out (what the clock does `lease_seconds` after a crash)."""
    table = Lease.__table__
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.name == name)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def test_lease_is_exclusive_expires_and_is_taken_over(db_url: str) -> None:
    engine = open_database(db_url)
    with CycleLease(engine, ttl_seconds=60) as first:
        with pytest.raises(CycleBusyError, match="another training cycle is running"):
            CycleLease(engine, ttl_seconds=60).__enter__()
        assert holder_of(engine)[0] == first.holder
        assert try_acquire(engine, CYCLE, first.holder, 60)  # re-entrant for its holder
        expire(engine)  # the holder stalled past its TTL ...
        assert try_acquire(engine, CYCLE, "other-host:1:x", 60)  # ... and was taken over
        assert not heartbeat(engine, CYCLE, first.holder, 60)
        first.lost = True  # what the heartbeat thread concludes from that
        with pytest.raises(CycleBusyError, match="taken over"):
            first.check()
    # leaving the block releases only what it holds: the new holder keeps the lease
    assert holder_of(engine)[0] == "other-host:1:x"
    expire(engine)
    with CycleLease(engine, ttl_seconds=60):
        pass
    assert holder_of(engine) is None  # released at the end


def test_lease_heartbeat_thread_keeps_it_alive(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'protege.db'}")
    with CycleLease(engine, ttl_seconds=0.2) as lease:
        first_expiry = holder_of(engine)[1]
        for _ in range(100_000):  # the thread beats every ttl/4 (50 ms)
            if holder_of(engine)[1] != first_expiry:
                break
        assert holder_of(engine)[1] > first_expiry
        assert not lease.lost
        lease.check()


@pytest.mark.slow
def test_two_schedulers_racing_run_one_cycle(db_url: str, tmp_path: Path, sandbox_test) -> None:
    profile = write_profile(tmp_path / "p.yaml", tmp_path / "home", db_url, sandbox_test)
    job = f"from learner.scheduler import scheduled_cycle; scheduled_cycle({str(profile)!r})"
    go = tmp_path / "go"
    children = [start(["-c", job], tmp_path, "stage:select", resume=go) for _ in range(2)]
    try:
        wait_for_marker(tmp_path, children)  # one holds the lease, paused in its first stage
        while all(c.poll() is None for c in children):  # the other one gives up
            time.sleep(0.05)
        loser = next(c for c in children if c.poll() is not None)
        assert loser.returncode == 0
        assert "scheduled cycle skipped: another training cycle is running" in loser.stderr.read()
        go.touch()  # let the winner finish its (nothing new: skipped) cycle
        winner = next(c for c in children if c is not loser)
        assert winner.wait(timeout=300) == 0, winner.stderr.read()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.stdout.close()
            child.stderr.close()
    engine = open_database(db_url)
    with Session(engine) as session:
        runs = session.exec(select(Run)).all()
    assert [(r.trigger, r.status) for r in runs] == [("schedule", "skipped")]
    assert holder_of(engine) is None


@pytest.mark.slow
def test_killed_holder_blocks_until_expiry_then_is_taken_over(
    db_url: str, tmp_path: Path, sandbox_test, capsys: pytest.CaptureFixture
) -> None:
    profile = write_profile(tmp_path / "p.yaml", tmp_path / "home", db_url, sandbox_test)
    cli = ["-m", "assistant.cli", "--config", str(profile), "train", "--now", "--no-notify"]
    child = start(cli, tmp_path, "stage:select")
    wait_for_marker(tmp_path, [child])
    kill9(child)  # dies holding the lease, its run row still "running"

    assert cli_main(["--config", str(profile), "train", "--now", "--no-notify"]) == 2
    assert "another training cycle is running" in capsys.readouterr().err
    engine = open_database(db_url)
    expire(engine)  # lease_seconds later
    assert cli_main(["--config", str(profile), "train", "--now", "--no-notify"]) == 0
    assert '"status": "skipped"' in capsys.readouterr().out
    with Session(engine) as session:
        runs = session.exec(select(Run).order_by(Run.id)).all()
    assert [r.status for r in runs] == ["failed", "skipped"]
    assert "interrupted during stage 'select'" in runs[0].message
    assert holder_of(engine) is None
