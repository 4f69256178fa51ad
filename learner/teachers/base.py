"""The student's base model as teacher: same weights with the LoRA adapter switched off.

Costs no extra memory: the teacher *is* the frozen base under the adapter being trained.
"""

from __future__ import annotations

import torch
from peft import PeftModel

from learner.sampling import SampleBatch
from learner.scoring import completion_logprobs


class BaseModelTeacher:
    name = "base"

    def __init__(self, model: PeftModel) -> None:
        self.model = model

    @torch.no_grad()
    def logprobs(self, batch: SampleBatch) -> torch.Tensor:
        with self.model.disable_adapter():
            return completion_logprobs(
                self.model, batch.sequences_B_T, batch.attention_mask_B_T, batch.completion_mask_B_T
            )
