"""bench/gpu_profile.py: skips cleanly without a GPU; its whole path runs on small shapes (CPU).

.venv/bin/python -m pytest tests/test_gpu_profile.py -q
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_profile.py"
STAGES = ("midtrain", "opd_sample", "teacher_score", "opd_update", "eval_generate")


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU: the bench runs")
def test_without_a_gpu_it_says_so_and_stops():
    assert "no CUDA GPU visible: bench/gpu_profile.py skipped" in _run()


def test_every_stage_runs_on_small_shapes():
    rows = [
        line for line in _run("--smoke", "--shrink", "64").splitlines() if line.startswith("| ")
    ]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows[1:]] == list(STAGES)
    for row in rows[1:]:
        seconds, tokens = row.split(" | ")[1:3]
        assert float(seconds) > 0 and int(tokens.replace(",", "")) > 0
