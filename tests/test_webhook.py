"""The cycle webhook (learner/webhook.py) against a real local HTTP server, SQLite and PostgreSQL.

.venv/bin/python -m pytest tests/test_webhook.py -q
"""

from __future__ import annotations

import json
import socket

from sqlmodel import Session
from webhook_receiver import receiver

from knowledge.db import open_database
from knowledge.tables import utcnow
from learner.tables import Run
from learner.webhook import send_webhook


def _run(db_url: str) -> int:
    with Session(open_database(db_url)) as session:
        row = Run(
            status="failed", stage="register", message="disk full (...)",
            metrics_json=json.dumps({"seconds": {"select": 1.5}}), finished_at=utcnow(),
        )  # fmt: skip
        session.add(row)
        session.commit()
        return row.id


def _metrics(db_url: str, run_id: int) -> dict:
    with Session(open_database(db_url)) as session:
        return json.loads(session.get(Run, run_id).metrics_json)


def test_posts_the_run_and_records_delivery(db_url: str) -> None:
    run_id = _run(db_url)
    with receiver() as hook:
        outcome = send_webhook(hook.url, open_database(db_url), run_id)
    assert outcome == "delivered (HTTP 200)"
    assert hook.posts == [
        {
            "run_id": run_id,
            "status": "failed",
            "message": "disk full (...)",
            "adapter_version": None,
            "metrics": {"seconds": {"select": 1.5}},
        }
    ]
    assert _metrics(db_url, run_id) == {"seconds": {"select": 1.5}, "webhook": outcome}


def test_a_failing_receiver_is_recorded_never_raised(db_url: str) -> None:
    run_id = _run(db_url)
    engine = open_database(db_url)
    with receiver(status=500) as hook:
        outcome = send_webhook(hook.url, engine, run_id)
    assert len(hook.posts) == 1 and outcome.startswith("failed: HTTPStatusError")
    assert _metrics(db_url, run_id)["webhook"] == outcome

    with socket.socket() as sock:  # a port nobody listens on once the block ends
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = send_webhook(f"http://127.0.0.1:{port}/hook", engine, run_id)
    assert outcome.startswith("failed: ConnectError")
    assert _metrics(db_url, run_id)["webhook"] == outcome
    assert send_webhook(None, engine, run_id) is None  # not configured: nothing sent or recorded
    assert _metrics(db_url, run_id)["webhook"] == outcome
