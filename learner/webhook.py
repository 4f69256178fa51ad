"""Tell an outside system how each nightly cycle ended: a JSON POST to `schedule.webhook_url`.

    {"run_id": 7, "status": "succeeded", "message": "v0003 promoted (passed)",
     "adapter_version": "v0003", "metrics": {...}}

Sent after every cycle that wrote a run (succeeded, skipped or failed), with a short timeout.
Delivery is best effort: a failure is logged and recorded in the run's metrics under "webhook",
and never fails the cycle. Tests: .venv/bin/python -m pytest tests/test_webhook.py -q
"""

from __future__ import annotations

import json
import logging

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from learner.tables import Run

log = logging.getLogger("protege.webhook")
TIMEOUT_SECONDS = 10.0  # the cycle already finished: never hold the lease long for a receiver


def run_payload(engine: Engine, run_id: int) -> dict:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        return {
            "run_id": run.id,
            "status": run.status,
            "message": run.message,
            "adapter_version": run.adapter_version,
            "metrics": json.loads(run.metrics_json or "{}"),
        }


def _record(engine: Engine, run_id: int, outcome: str) -> None:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        run.metrics_json = json.dumps({**json.loads(run.metrics_json or "{}"), "webhook": outcome})
        session.add(run)
        session.commit()


def send_webhook(url: str | None, engine: Engine, run_id: int) -> str | None:
    """POST the run's outcome to `url` (None: do nothing); returns what happened, never raises."""
    if not url:
        return None
    try:
        response = httpx.post(url, json=run_payload(engine, run_id), timeout=TIMEOUT_SECONDS)
        response.raise_for_status()
        outcome = f"delivered (HTTP {response.status_code})"
    except Exception as exc:  # noqa: BLE001  (whatever the receiver does, the cycle stands)
        outcome = f"failed: {exc.__class__.__name__}: {exc}"
        log.warning("run %s: webhook to %s %s", run_id, url, outcome)
    try:
        _record(engine, run_id, outcome)
    except Exception:  # noqa: BLE001
        log.exception("run %s: could not record the webhook outcome", run_id)
    return outcome
