"""A nightly cycle as operations sees it: training sources, webhook, a disk-full failure.

.venv/bin/python -m pytest tests/test_cycle_ops.py -q

Cycle 1 trains on documents, the prompt files and the conversations of users who did not opt
out, and reports it; cycle 2 runs out of disk while saving its adapter: the run says so, the
webhook hears it, and v0001 stays served.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml
from cycle_children import TINY_LEARNER, write_profile
from peft import PeftModel
from sqlmodel import Session, col, select
from webhook_receiver import receiver

from assistant.cli import main as cli_main
from knowledge.db import open_database
from knowledge.optout import set_training_opt_out
from knowledge.settings import load_settings
from knowledge.tables import Exchange
from learner.datasets import load_prompts
from learner.pipeline import run_cycle
from learner.registry import Registry
from learner.tables import Run

TINY = {"sources": {"documents": True, "conversations": True, "prompt_files": True}, **TINY_LEARNER}


def _profile(tmp_path: Path, db_url: str, manifest, webhook_url: str) -> Path:  # noqa: ANN001
    path = write_profile(tmp_path / "p.yaml", tmp_path / "home", db_url, manifest, TINY)
    profile = yaml.safe_load(path.read_text())
    profile["schedule"] = {"webhook_url": webhook_url}
    path.write_text(yaml.safe_dump(profile))
    return path


def _chat(engine, user: str | None, question: str) -> None:  # noqa: ANN001
    with Session(engine) as session:
        messages = json.dumps([{"role": "user", "content": question}])
        session.add(
            Exchange(
                user=user, messages_json=messages, answer="-", adapter_version="base", latency_ms=1
            )
        )
        session.commit()


def _no_space(self, path, **_) -> None:  # noqa: ANN001
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.slow
def test_sources_webhook_and_disk_full(
    db_url: str, tmp_path: Path, sandbox_test, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    with receiver() as hook:
        profile = str(_profile(tmp_path, db_url, sandbox_test, hook.url))
        day1 = sorted(map(str, sandbox_test.days[0].documents_dir.glob("*.md")))
        assert cli_main(["--config", profile, "ingest", *day1]) == 0
        settings = load_settings(profile)
        engine = open_database(settings.db_url)
        _chat(engine, "ana", "Who leads the Lisbon office?")
        _chat(engine, "bo", "What is my bonus?")
        _chat(engine, None, "anonymous")
        set_training_opt_out(engine, "bo", True)
        files = sum(
            len(load_prompts(p))
            for p in (sandbox_test.chat_prompts_file, sandbox_test.opd_prompts_file)
        ) + len(list(sandbox_test.background_documents_dir.glob("*.md")))  # replayed documents
        sources = {"documents": len(day1), "prompt_files": files, "conversations": 1}

        first = run_cycle(settings, progress=False, notify=False)
        assert (first.status, first.version, first.promoted) == ("succeeded", "v0001", True)
        with Session(engine) as session:
            run = session.get(Run, first.run_id)
            metrics = json.loads(run.metrics_json)
        assert metrics["sources"] == sources
        assert metrics["webhook"] == "delivered (HTTP 200)"
        [sent] = hook.posts
        assert (sent["run_id"], sent["status"], sent["adapter_version"]) == (
            first.run_id,
            "succeeded",
            "v0001",
        )
        assert sent["message"] == first.message and sent["metrics"]["sources"] == sources

        day2 = sorted(map(str, sandbox_test.days[1].documents_dir.glob("*.md")))
        assert cli_main(["--config", profile, "ingest", *day2]) == 0
        capsys.readouterr()
        assert cli_main(["--config", profile, "train", "--now", "--dry-run", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["sources"] == {**sources, "documents": len(day2)} and plan["sources_off"] == []
        assert cli_main(["--config", profile, "train", "--now", "--dry-run"]) == 0
        assert (
            f"sources: documents ({len(day2)}), prompt_files ({files}), conversations (1); off: none"
            in (capsys.readouterr().out)
        )

        monkeypatch.setattr(PeftModel, "save_pretrained", _no_space)
        assert cli_main(["--config", profile, "train", "--now", "--no-notify"]) == 1
        err = capsys.readouterr().err
        assert "training failed: disk full (OSError: [Errno 28] No space left on device" in err

    with Session(engine) as session:
        failed = session.exec(select(Run).order_by(col(Run.id).desc())).first()
    assert (failed.status, failed.stage) == ("failed", "register")
    assert failed.message.startswith("disk full (OSError: [Errno 28] No space left on device")
    assert f"Free space under {settings.home}" in failed.message
    assert failed.message in err
    registry = Registry(settings)
    assert registry.served_version() == "v0001"  # untouched
    assert [a.version for a in registry.list()] == ["v0001"]
    assert not (settings.adapters_dir / "v0002").exists()
    assert [(p["run_id"], p["status"]) for p in hook.posts] == [
        (first.run_id, "succeeded"),
        (failed.id, "failed"),
    ]
    assert hook.posts[1]["message"] == failed.message
