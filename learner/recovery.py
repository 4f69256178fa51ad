"""Clean up after a cycle that died (`kill -9`, power loss) before the next one starts.

Called by `run_cycle` right after it takes the cycle lease, so no other cycle can be running:
every `running` row left is a dead process's. The recovery starts over cleanly rather than
resuming (a stage's state lives in a process's memory; re-running a cycle costs minutes):

- runs still `running` are marked `failed`, saying in which stage their process died;
- `adapters/*.tmp` folders (a register that never reached its rename) are removed;
- adapter folders without a registry row (killed between the rename and the row) are removed:
  nothing ever served them, since serving only loads adapters that have a row;
- `candidate` adapters registered by a dead run (killed before promote decided) are rejected,
  so a half-finished cycle never leaves something promotable behind. The served pointer is never
  touched: promotion is one transaction, so it is either the old or the new adapter.

Tests: .venv/bin/python -m pytest tests/test_crash_cycle.py -q
"""

from __future__ import annotations

import logging
import re
import shutil

from sqlmodel import Session, select

from knowledge.tables import utcnow
from learner.registry import Registry
from learner.tables import Run

log = logging.getLogger("protege.recovery")
VERSION_DIR = re.compile(r"v\d+(\.tmp)?")


def recover_after_crash(registry: Registry) -> list[str]:
    """Mark dead runs failed and remove partial adapters; returns what was done, for the log."""
    notes: list[str] = []
    with Session(registry.engine) as session:
        stale = list(session.exec(select(Run).where(Run.status == "running")))
        stale_ids = {run.id for run in stale}
        for run in stale:
            run.status = "failed"
            run.message = (
                f"interrupted during stage {run.stage!r} (the process died); "
                "marked failed by the next cycle, which started over"
            )
            run.finished_at = utcnow()
            session.add(run)
            notes.append(f"run {run.id} (stage {run.stage}) marked failed")
        session.commit()
    rows = {row.version: row for row in registry.list()}
    for path in sorted(registry.root.iterdir()):
        if not (path.is_dir() and VERSION_DIR.fullmatch(path.name)):
            continue  # only what `Registry.register` writes; anything else is not ours
        if path.name.endswith(".tmp") or path.name not in rows:
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed partial adapter folder {path.name}")
    for version, row in rows.items():
        if row.status == "candidate" and row.run_id in stale_ids:
            registry.reject(version)
            notes.append(f"rejected {version}: its run {row.run_id} died before promote")
    for note in notes:
        log.warning("recovery: %s", note)
    return notes
