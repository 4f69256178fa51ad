"""A database lease: one training cycle at a time across processes and hosts.

    with CycleLease(engine, ttl_seconds=300) as lease:   # CycleBusyError if someone holds it
        ...                                              # heartbeats in a background thread
        lease.check()                                    # CycleBusyError if it was lost

Works on SQLite and PostgreSQL with plain SQL, no advisory locks: taking the lease is one
conditional UPDATE (free, expired, or already ours) or, when the row does not exist yet, one
INSERT that the primary key makes fail for all but one racer. Either statement is atomic on its
own, so two schedulers racing at the same tick get exactly one winner. A holder that is killed
stops heartbeating; `ttl_seconds` after its last heartbeat anyone may take the lease over.
Clocks are the hosts' UTC clocks (NTP-synced hosts; the TTL dwarfs any skew).

Tests: .venv/bin/python -m pytest tests/test_lease.py -q
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from knowledge.errors import CycleBusyError
from knowledge.tables import utcnow
from learner.tables import Lease

log = logging.getLogger("protege.lease")
CYCLE = "nightly-cycle"


def new_holder() -> str:
    """Who holds a lease: host and pid for people reading it, a random part for uniqueness."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def try_acquire(engine: Engine, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take the lease if it is free, expired or already ours; True when we hold it now."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_seconds)
    values = {"holder": holder, "heartbeat_at": now, "expires_at": expires}
    table = Lease.__table__
    with engine.begin() as conn:
        taken = conn.execute(
            update(table)
            .where(table.c.name == name)
            .where((table.c.expires_at < now) | (table.c.holder == holder))
            .values(**values)
        )
        if taken.rowcount == 1:
            return True
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(name=name, **values))
        return True
    except IntegrityError:
        return False  # the row exists and is held (or another racer inserted it just now)


def holder_of(engine: Engine, name: str = CYCLE) -> tuple[str, datetime] | None:
    """(holder, expires_at) of a lease, or None when nobody ever took it or it was released."""
    table = Lease.__table__
    with engine.connect() as conn:
        row = conn.execute(
            select(table.c.holder, table.c.expires_at).where(table.c.name == name)
        ).first()
    return (row[0], row[1]) if row else None


def heartbeat(engine: Engine, name: str, holder: str, ttl_seconds: float) -> bool:
    """Push the expiry forward; False when the lease is no longer ours (it expired and was taken)."""
    now = utcnow()
    table = Lease.__table__
    with engine.begin() as conn:
        result = conn.execute(
            update(table)
            .where(table.c.name == name, table.c.holder == holder)
            .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl_seconds))
        )
    return result.rowcount == 1


def release(engine: Engine, name: str, holder: str) -> None:
    table = Lease.__table__
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.name == name, table.c.holder == holder))


class CycleLease:
    """Hold a lease for the length of a `with` block, heartbeating every `ttl_seconds / 4`."""

    def __init__(self, engine: Engine, ttl_seconds: float = 300, name: str = CYCLE) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self.name = name
        self.holder = new_holder()
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CycleLease:
        if not try_acquire(self.engine, self.name, self.holder, self.ttl):
            current = holder_of(self.engine, self.name)
            who = f"{current[0]} until {current[1]:%Y-%m-%d %H:%M:%S} UTC" if current else "?"
            raise CycleBusyError(
                f"another training cycle is running (lease {self.name!r} held by {who}); "
                "this one is skipped"
            )
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not heartbeat(self.engine, self.name, self.holder, self.ttl):
                    self.lost = True
                    log.error("lease %s lost: another holder took it over", self.name)
                    return
            except Exception:  # a DB hiccup: keep trying until the lease really expires
                log.exception("lease %s heartbeat failed", self.name)

    def check(self) -> None:
        """Raise CycleBusyError when the lease was lost (we stalled past the TTL)."""
        if self.lost:
            raise CycleBusyError(
                f"lease {self.name!r} expired and was taken over; this cycle stops here"
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        release(self.engine, self.name, self.holder)
