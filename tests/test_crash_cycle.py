"""`kill -9` of a real `protege train --now` in a stage, then a clean next run.

    .venv/bin/python -m pytest tests/test_crash_cycle.py -q

Before the crash an adapter (v0001) is served. The child is stopped at a point of the cycle
(`PROTEGE_TEST_PAUSE_AT`, knowledge/faults.py) and SIGKILLed there. Whatever the point: the served
adapter is still v0001 and its folder still matches its checksum, the registry has no row for a
partial folder, and the next `protege train --now` marks the dead run failed, removes what the
dead run left half-written, trains, and promotes a new adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cycle_children import kill9, start, wait_for_marker, write_profile
from sqlmodel import Session, select

from assistant.cli import main as cli_main
from knowledge.db import open_database
from knowledge.settings import load_settings
from knowledge.store import KnowledgeStore
from learner.lease import holder_of
from learner.modeling import resolve_model_ref, torch_device
from learner.pipeline import _trainable_student
from learner.registry import BASE, Registry, folder_sha256
from learner.tables import Run


def serve_fresh_adapter(profile: Path) -> Registry:
    """v0001: an untrained LoRA, registered and promoted (quicker than a whole first cycle)."""
    settings = load_settings(str(profile))
    registry = Registry(settings)
    path = resolve_model_ref(settings, settings.models.student)
    model = _trainable_student(settings, registry, BASE, path, torch_device(settings))
    registry.register(
        "v0001", save=model.save_pretrained, parent_version=None, base_model=path,
        config={}, documents=[], metrics={},
    )  # fmt: skip
    registry.promote("v0001", actor="test")
    return registry


CASES = [
    # point, what the dead run left behind in adapters/
    ("stage:select", set()),
    ("stage:evaluate_before", set()),
    ("stage:midtrain", set()),
    ("stage:distill", set()),
    ("stage:evaluate", set()),
    ("register:written", {"v0002.tmp"}),  # a complete folder never renamed into place
    ("register:renamed", {"v0002"}),  # renamed into place, no registry row yet
    ("stage:promote", {"v0002"}),  # registered as a candidate, not promoted
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "left_behind"), CASES, ids=[c[0] for c in CASES])
def test_kill_in_stage_keeps_served_adapter_and_next_run_recovers(
    point: str, left_behind: set[str], db_url: str, tmp_path: Path, sandbox_test, capsys
) -> None:
    """Every stage, on SQLite and on PostgreSQL (the `db_url` fixture)."""
    crash_then_recover(point, left_behind, db_url, tmp_path, sandbox_test, capsys)


def crash_then_recover(point, left_behind, db_url, tmp_path, sandbox_test, capsys) -> None:  # noqa: ANN001
    home = tmp_path / "home"
    profile = write_profile(tmp_path / "p.yaml", home, db_url, sandbox_test)
    settings = load_settings(str(profile))
    KnowledgeStore(settings).ingest_paths(sorted(sandbox_test.days[0].documents_dir.glob("*.md")))
    registry = serve_fresh_adapter(profile)
    served_sha = registry.get("v0001").sha256

    cli = ["-m", "assistant.cli", "--config", str(profile), "train", "--now", "--no-notify"]
    child = start(cli, tmp_path, point)
    wait_for_marker(tmp_path, [child])
    kill9(child)

    # Right after the crash: the served adapter is untouched, nothing partial has a row.
    assert registry.served_version() == "v0001"
    assert folder_sha256(registry.verify("v0001")) == served_sha
    on_disk = {p.name for p in settings.adapters_dir.iterdir()}
    assert on_disk == {"v0001"} | left_behind
    rows = {a.version: a.status for a in registry.list()}
    expected_rows = {"v0001": "promoted"}
    if point == "stage:promote":
        expected_rows["v0002"] = "candidate"
    assert rows == expected_rows
    engine = open_database(db_url)
    assert holder_of(engine) is not None  # the dead process still "holds" the lease ...
    with engine.begin() as conn:  # ... until it expires (lease_seconds later)
        conn.exec_driver_sql("UPDATE lease SET expires_at = '2000-01-01 00:00:00+00:00'")

    assert cli_main(["--config", str(profile), "train", "--now", "--no-notify"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and result["promoted"], result
    new = result["version"]
    with Session(engine) as session:
        runs = session.exec(select(Run).order_by(Run.id)).all()
    assert [r.status for r in runs] == ["failed", "succeeded"]
    kind, where = point.split(":")
    stage = where if kind == "stage" else kind  # "register:renamed" dies in stage "register"
    assert f"interrupted during stage '{stage}'" in runs[0].message
    assert registry.served_version() == new and registry.verify(new)
    rows = {a.version: a.status for a in registry.list()}
    if point == "stage:promote":
        assert rows["v0002"] == "rejected" and new == "v0003"  # the dead run's candidate
    else:
        assert new == "v0002"
    assert {p.name for p in settings.adapters_dir.iterdir()} == set(rows)  # nothing partial left
    assert holder_of(engine) is None
