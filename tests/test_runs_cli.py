"""`protege train --now --dry-run` and `protege runs list|show`, as an operator runs them.

.venv/bin/python -m pytest tests/test_runs_cli.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cycle_children import REPO, write_profile


@pytest.mark.slow
def test_dry_run_then_train_then_runs_list_and_show(sandbox_test, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'home' / 'protege.db'}"
    profile = write_profile(tmp_path / "p.yaml", tmp_path / "home", db_url, sandbox_test)

    def cli(*args: str, code: int = 0) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "assistant.cli", "--config", str(profile), *args],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == code, out.stdout + out.stderr
        return out.stdout if code == 0 else out.stderr  # progress bars go to stderr

    docs = sorted(sandbox_test.days[0].documents_dir.glob("*.md"))
    cli("ingest", *map(str, docs))

    plan = json.loads(cli("train", "--now", "--dry-run", "--json"))
    assert plan["served"] == "base"
    assert [(d["id"], d["name"], d["version"]) for d in plan["documents"]] == [
        (i, p.name, 1) for i, p in enumerate(docs, start=1)
    ]
    assert all(d["tokens"] > 0 for d in plan["documents"])
    assert plan["document_tokens"] == sum(d["tokens"] for d in plan["documents"])
    assert plan["estimated_seconds"] > 0 and "rough guess" in plan["estimate_basis"]
    human = cli("train", "--now", "--dry-run")
    assert "would train on" in human and docs[0].name in human and "estimated time" in human
    assert (
        "no runs" not in cli("runs", "list") and len(json.loads(cli("runs", "list", "--json"))) == 0
    )

    result = json.loads(cli("train", "--now", "--no-notify"))
    assert result["status"] == "succeeded", result

    [run] = json.loads(cli("runs", "list", "--json"))
    assert (run["id"], run["status"], run["adapter_version"]) == (
        result["run"],
        "succeeded",
        "v0001",
    )
    shown = json.loads(cli("runs", "show", str(run["id"]), "--json"))
    assert {
        "select",
        "evaluate_before",
        "midtrain",
        "distill",
        "evaluate",
        "register",
        "promote",
    } <= (shown["seconds"].keys())
    assert "qa_closed_book" in shown["metrics"] and shown["metrics"]["work_tokens"] > 0
    assert "promoted" in shown["message"]
    text = cli("runs", "show", str(run["id"]))
    assert "stage timings" in text and "midtrain" in text and "qa_closed_book" in text
    assert "succeeded" in cli("runs", "list")
    assert "no run 99" in cli("runs", "show", "99", code=2)

    nothing = json.loads(cli("train", "--now", "--dry-run", "--json"))
    assert nothing["documents"] == [] and "skipped" in nothing["message"]

    cli("ingest", *map(str, sorted(sandbox_test.days[1].documents_dir.glob("*.md"))))
    later = json.loads(cli("train", "--now", "--dry-run", "--json"))
    assert later["served"] == "v0001" and later["documents"]
    assert later["estimate_basis"].startswith(f"scaled from run {run['id']}")
    assert len(json.loads(cli("runs", "list", "--json"))) == 1  # dry runs leave no run behind
