"""Teachers score sampled tokens: `Teacher.logprobs(batch) -> [B, T]` (0 outside completions).

Implementations, one per file: `base.py` (the student's own base weights, adapter disabled: the
reference recipe's "model before mid-training") and `local.py` (another transformers model).
"""

from __future__ import annotations

from typing import Protocol

import torch

from learner.sampling import SampleBatch


class Teacher(Protocol):
    name: str

    def logprobs(self, batch: SampleBatch) -> torch.Tensor: ...
