"""The student's base model as teacher: same weights with the LoRA adapter switched off.

Costs no extra memory: the teacher *is* the frozen base under the adapter being trained. It is
`models.teacher: base` (the raw base weights, whatever is served), and `previous` while the base
model is what is served (learner/teachers/factory.py).
"""

from __future__ import annotations

import torch
from peft import PeftModel

from learner.sampling import SampleBatch
from learner.scoring import completion_logprobs


class BaseModelTeacher:
    def __init__(self, model: PeftModel, name: str = "base") -> None:
        self.model = model
        self.name = name

    @torch.no_grad()
    def logprobs(self, batch: SampleBatch) -> torch.Tensor:
        with self.model.disable_adapter():
            return completion_logprobs(
                self.model, batch.sequences_B_T, batch.attention_mask_B_T, batch.completion_mask_B_T
            )
