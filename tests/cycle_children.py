"""Helpers for tests that run real `protege` processes and stop or kill them mid-cycle.

A child gets `PROTEGE_TEST_PAUSE_AT=<point>` (knowledge/faults.py): at that point it writes the
point's name to a marker file and waits (an hour, or until a resume file exists). The test waits
for the marker, then kills the child (`kill -9`) or lets it go on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from knowledge.faults import MARKER_ENV, PAUSE_ENV, RESUME_ENV

REPO = Path(__file__).resolve().parent.parent


# Tiny training settings on the test sandbox: mechanics only, so the gate lets everything through.
TINY_LEARNER = {
    "midtrain": {
        "epochs": 1,
        "batch_size": 8,
        "seq_len": 64,
        "warmup_steps": 1,
        "doc_fraction": 0.7,
    },
    "distill": {"steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4},
    "gate": {
        "ifeval_margin": 1.0,
        "qa_tolerance": 1.0,
        "known_qa_drop": 1.0,
        "earlier_qa_drop": 1.0,
        "min_new_qa_gain": -1.0,
    },
    "eval": {"max_new_tokens": 4, "batch_size": 64},
}


def write_profile(
    path: Path, home: Path, db_url: str, manifest, learner: dict | None = None
) -> Path:  # noqa: ANN001
    """A YAML profile on the test sandbox with tiny training settings."""
    profile = {
        "home": str(home),
        "database_url": db_url,
        "sandbox": {"size": manifest.size, "seed": manifest.seed, "dir": str(manifest.root.parent)},
        "knowledge": {"chunk_tokens": 64, "chunk_overlap": 8, "top_k": 2},
        "learner": learner or TINY_LEARNER,
    }
    path.write_text(yaml.safe_dump(profile))
    return path


def start(
    args: list[str], tmp_path: Path, point: str | None = None, resume: Path | None = None
) -> subprocess.Popen:
    """Start `python <args>` from the repository root, pausing at `point` if given."""
    env = {**os.environ}
    for key in (PAUSE_ENV, MARKER_ENV, RESUME_ENV):
        env.pop(key, None)
    if point:
        env |= {PAUSE_ENV: point, MARKER_ENV: str(tmp_path / "paused")}
    if resume:
        env[RESUME_ENV] = str(resume)
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_marker(tmp_path: Path, children: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until some child has written the pause marker; fails if every child ended first."""
    marker = tmp_path / "paused"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if all(c.poll() is not None for c in children):
            outputs = "\n".join(c.stdout.read() + c.stderr.read() for c in children)
            raise AssertionError(f"no child reached the pause point:\n{outputs[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("no child reached the pause point in time")
        time.sleep(0.05)


def kill9(child: subprocess.Popen) -> None:
    """SIGKILL: no cleanup, no atexit, no finally, no lease release: a real crash."""
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    child.stdout.close()
    child.stderr.close()
