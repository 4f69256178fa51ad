"""Shared pieces of the learner benches: settings overrides, students, stage memory, stats.

Imported by bench/personalization.py and bench/restore_cost.py (run as scripts from the repo
root, so `bench/` is on sys.path).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from knowledge.settings import Settings, load_settings
from learner.modeling import load_causal_lm

CPU = torch.device("cpu")


def settings_from_args(config: str, size: str | None, overrides: list[str]) -> Settings:
    """Load a profile; `overrides` are `section.key=value` on settings.learner (e.g. midtrain.lr=1e-3)."""
    settings = load_settings(config)
    if size:
        settings.sandbox.size = size
    for item in overrides:
        path, value = item.split("=", 1)
        section, key = path.split(".")
        target = getattr(settings.learner, section)
        setattr(target, key, type(getattr(target, key))(value))
    return settings


def student(settings: Settings, path: Path, lora: bool, seed: int) -> PeftModel | PreTrainedModel:
    """The base student, under a fresh LoRA adapter (`lora`) or fully trainable."""
    torch.manual_seed(seed)
    model = load_causal_lm(path, CPU, "float32")
    if not lora:
        return model
    cfg = settings.learner.lora
    return get_peft_model(
        model,
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=0.0,
            target_modules=cfg.target_modules,
            task_type="CAUSAL_LM",
        ),
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class StagePeaks:
    """Peak resident memory (MB) of each named stage, sampled every 20 ms by a thread.

    peaks = StagePeaks()
    with peaks.stage("midtrain"):
        ...
    peaks.mb  # {"midtrain": 812.0}
    """

    def __init__(self) -> None:
        self.mb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        peak = [_rss_mb()]
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], _rss_mb())

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.mb[name] = max(self.mb.get(name, 0.0), peak[0], _rss_mb())


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def mean_spread(values: list[float], pct: bool = True) -> str:
    """`mean ± spread` (spread = sample standard deviation; `± 0` for one seed)."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1%} ± {sd:.1%}" if pct else f"{mean:,.0f} ± {sd:,.0f}"
