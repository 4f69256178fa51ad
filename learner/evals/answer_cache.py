"""The base model's greedy eval answers, kept between nights.

From the second night the cycle evaluates the raw base beside the served model (the gate's
IFEval and known-QA bounds are the base's), and the base never changes: its answers to the
IFEval, known-QA, in-context and cloze items, and to every earlier day's questions, are the
same each night. Only prompts it has not answered yet (the new day's questions, open-book
prompts whose retrieved passages changed) are generated.

The cache belongs to one base: its file is named by a fingerprint of the model folder's files
(name, size, modification time), the dtype and the device, so a rebuilt or replaced base starts
an empty one. Answers are greedy, so a cached answer is the one the base gives (up to the
rounding of a different batch's padding).

    cache = base_answers(settings, student_path, device)
    metrics = evaluate_model(model, tokenizer, ..., answer_cache=cache); cache.save()
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from knowledge.settings import Settings


class AnswerCache:
    """Answers by (kind, max_new_tokens, prompt), loaded from and saved to one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self._used: set[str] = set()  # what this run asked: all that `save` keeps
        try:
            self._answers: dict[str, str] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # none yet, or a torn file: start afresh
            self._answers = {}

    @classmethod
    def for_model(cls, folder: Path, model_dir: Path, dtype: str, device: str) -> AnswerCache:
        digest = hashlib.sha256(f"{dtype}|{device}".encode())
        for file in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(
                f"|{file.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
            )
        return cls(Path(folder) / f"{digest.hexdigest()[:24]}.json")

    def answer(
        self,
        kind: str,
        max_new_tokens: int,
        prompts: list[str],
        generate: Callable[[list[str]], list[str]],
    ) -> list[str]:
        """The cached answers, `generate` called once on the prompts not cached yet."""
        keys = [f"{kind}\x00{max_new_tokens}\x00{p}" for p in prompts]
        first: dict[str, int] = {}  # each prompt not cached, at its first place
        for i, key in enumerate(keys):
            if key not in self._answers:
                first.setdefault(key, i)
        missing = list(first.values())
        if missing:
            fresh = generate([prompts[i] for i in missing])
            for i, text in zip(missing, fresh, strict=True):
                self._answers[keys[i]] = text
        self.misses += len(missing)
        self.hits += len(prompts) - len(missing)
        self._used.update(keys)
        return [self._answers[k] for k in keys]

    def save(self) -> None:
        """Keep the answers this run asked for, no others: the file stays one night's eval in
        size (prompts no longer asked, e.g. open-book prompts whose passages changed, go).
        Written whole to a temporary file and renamed: a crash leaves the old file or the new."""
        kept = {key: text for key, text in self._answers.items() if key in self._used}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, self.path)


def _folder(settings: Settings) -> Path:
    return settings.home / "cache" / "base-answers"


def base_answers(settings: Settings, model_dir: Path, device: torch.device) -> AnswerCache:
    """The cache of the student's raw base under `<home>/cache/base-answers/`."""
    return AnswerCache.for_model(_folder(settings), model_dir, settings.models.dtype, str(device))


def forget_base_answers(settings: Settings) -> None:
    """Drop every cached answer: the prompts hold documents' questions and passages, so
    forgetting a document clears them (the next cycle answers afresh)."""
    shutil.rmtree(_folder(settings), ignore_errors=True)
