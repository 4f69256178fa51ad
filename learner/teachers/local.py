"""A separate transformers model as teacher (e.g. the larger sandbox teacher, or Qwen3-8B)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from knowledge.errors import IncompatibleTeacherError
from learner.modeling import load_causal_lm, load_tokenizer
from learner.sampling import SampleBatch
from learner.scoring import completion_logprobs


def check_compatible(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase) -> None:
    """Refuse, before any training, a teacher that would score other tokens than the student's."""
    if student.get_vocab() != teacher.get_vocab():
        raise IncompatibleTeacherError(
            "teacher tokenizer differs from the student's (vocabularies are not identical); "
            "OPD scores the student's token ids, so both must share one tokenizer"
        )
    if (student.chat_template or "") != (teacher.chat_template or ""):
        raise IncompatibleTeacherError("teacher chat template differs from the student's")


class LocalTeacher:
    def __init__(
        self,
        path: str,
        student_tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dtype: str,
    ) -> None:
        check_compatible(student_tokenizer, load_tokenizer(path))
        self.name = str(path)
        self.model = load_causal_lm(path, device, dtype)

    @torch.no_grad()
    def logprobs(self, batch: SampleBatch) -> torch.Tensor:
        return completion_logprobs(
            self.model, batch.sequences_B_T, batch.attention_mask_B_T, batch.completion_mask_B_T
        )
