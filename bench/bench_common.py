"""Shared pieces of the learner benches: settings overrides, students, stage memory, stats.

Imported by bench/personalization.py and bench/restore_cost.py (run as scripts from the repo
root, so `bench/` is on sys.path).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from knowledge.settings import Settings, load_settings
from learner.memory import StagePeaks  # noqa: F401 - the benches import it from here
from learner.modeling import load_causal_lm

CPU = torch.device("cpu")


def settings_from_args(config: str, size: str | None, overrides: list[str]) -> Settings:
    """Load a profile; `overrides` are `section.key=value` or `key=value` on settings.learner
    (e.g. midtrain.lr=1e-3, start=base), or on another section of the settings
    (models.general_teacher=base)."""
    settings = load_settings(config)
    if size:
        settings.sandbox.size = size
    for item in overrides:
        path, value = item.split("=", 1)
        *section, key = path.split(".")
        root = settings.learner
        if section and not hasattr(root, section[0]):
            root = settings  # a top-level section, e.g. models
        target = getattr(root, section[0]) if section else root
        current = getattr(target, key)
        if isinstance(current, bool):  # bool("false") is True
            parsed: object = value.lower() in ("1", "true", "yes", "on")
        elif current is None:
            parsed = value
        elif isinstance(current, list):  # lora.target_modules=gate_proj,up_proj
            parsed = value.split(",")
        else:
            parsed = type(current)(value)
        setattr(target, key, parsed)
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
