"""`protege runs list|show ID` and `protege train --now --dry-run`.

protege runs list [--limit N] [--json]     # newest first: status, stage, duration, message
protege runs show ID [--json]              # stage timings, metrics, message, files
protege train --now --dry-run [--json]     # what would be trained on, estimated time
"""

from __future__ import annotations

import argparse
import json

from sqlmodel import Session, col, select

from knowledge.db import open_database
from knowledge.errors import NotFoundError
from knowledge.settings import Settings


def run_row(run) -> dict:  # noqa: ANN001
    """A Run row as JSON: stage timings split out of the metrics (also GET /admin/runs)."""
    metrics = json.loads(run.metrics_json or "{}")
    seconds = metrics.pop("seconds", {})
    return {
        "id": run.id,
        "trigger": run.trigger,
        "status": run.status,
        "stage": run.stage,
        "adapter_version": run.adapter_version,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 2),
        "metrics": metrics,
        "message": run.message,
    }


def _runs(settings: Settings, args: argparse.Namespace) -> int:
    from learner.tables import Run  # light: no torch, so `runs` answers at once

    with Session(open_database(settings.db_url)) as session:
        if args.action == "show":
            run = session.get(Run, args.id)
            if run is None:
                raise NotFoundError(f"no run {args.id}")
            runs = [run]
        else:
            query = select(Run).order_by(col(Run.id).desc()).limit(args.limit)
            runs = list(session.exec(query))
        rows = [run_row(r) for r in runs]
    if args.action == "show":
        row = rows[0]
        row["dir"] = str(settings.runs_dir / f"{row['id']:05d}")  # as learner.pipeline names it
        if args.json:
            print(json.dumps(row, indent=2))
            return 0
        for key in ("id", "trigger", "status", "stage", "adapter_version"):
            print(f"{key:>16}: {row[key]}")
        print(f"{'started':>16}: {row['started_at']}\n{'finished':>16}: {row['finished_at']}")
        print(f"{'message':>16}: {row['message']}")
        print("stage timings (s):")
        for stage, secs in row["seconds"].items():
            print(f"  {stage:>14}: {secs:8.2f}")
        print("metrics:")
        for key, value in row["metrics"].items():
            print(f"  {key:>14}: {json.dumps(value)}")
        print(f"{'files':>16}: {row['dir']}/metrics.jsonl, config.json")
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':>5} {'trigger':8} {'status':9} {'stage':15} {'secs':>7} {'adapter':8} message")
    for row in rows:
        print(
            f"{row['id']:>5} {row['trigger']:8} {row['status']:9} {row['stage']:15} "
            f"{row['total_seconds']:7.1f} {row['adapter_version'] or '-':8} {row['message'][:80]}"
        )
    return 0


def dry_run(settings: Settings, as_json: bool) -> int:
    """What the next cycle would train on, without taking the lease or training."""
    from learner.plan import plan_cycle

    plan = plan_cycle(settings)
    if as_json:
        print(json.dumps(plan.as_dict(), indent=2))
        return 0
    print(f"served adapter: {plan.served}")
    print(plan.message)
    if plan.documents:
        print(f"{'id':>5} {'version':>7} {'tokens':>8} name")
        for doc in plan.documents:
            print(f"{doc.id:>5} {doc.version:>7} {doc.tokens:>8} {doc.name}")
        print(f"tokens to process (mid-training + distillation): {plan.work_tokens}")
        used = ", ".join(f"{name} ({n})" for name, n in plan.sources.items())
        print(f"sources: {used}; off: {', '.join(plan.sources_off) or 'none'}")
        print(f"estimated time: {plan.estimated_seconds:.0f} s ({plan.estimate_basis})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="training cycles: list, show one")
    runs_sub = runs.add_subparsers(dest="action", required=True)
    listing = runs_sub.add_parser("list", help="newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_runs)
    show = runs_sub.add_parser("show", help="one run: stage timings, metrics, message")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_runs)
