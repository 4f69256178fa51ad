"""The model served when the cycle started, frozen, as teacher (`models.teacher: previous`).

The reference recipe's teacher is "the model before this cycle's mid-training". On the first night
that is the base model; from the second night on the cycle continues the served adapter, and its
teacher must be that adapter as it was (it knows the earlier nights' documents), not the raw
base weights (which would pull the student back to knowing none of them).

The served adapter is loaded a second time into the student's PeftModel under the name
`previous`, frozen, and switched on only while the teacher scores; no second copy of the base
weights is made.

    with previous_adapter(model, served_dir) as teacher:
        teacher.logprobs(batch)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel

from learner.sampling import SampleBatch
from learner.scoring import completion_logprobs

ADAPTER = "previous"


class PreviousAdapterTeacher:
    """Scores with the frozen `previous` adapter of the student's own PeftModel."""

    def __init__(self, model: PeftModel, version: str) -> None:
        self.model = model
        self.name = f"previous ({version})"

    @contextmanager
    def active(self) -> Iterator[PeftModel]:
        """The model with the `previous` adapter on (generation, scoring); the trainable one after."""
        trained = self.model.active_adapter
        self.model.set_adapter(ADAPTER, inference_mode=True)
        try:
            yield self.model
        finally:
            self.model.set_adapter(trained)  # makes `trained` trainable again, `previous` frozen

    @torch.no_grad()
    def logprobs(self, batch: SampleBatch) -> torch.Tensor:
        with self.active():
            return completion_logprobs(
                self.model, batch.sequences_B_T, batch.attention_mask_B_T, batch.completion_mask_B_T
            )


@contextmanager
def previous_adapter(
    model: PeftModel, adapter_dir: Path, version: str
) -> Iterator[PreviousAdapterTeacher]:
    """Load `adapter_dir` as the frozen `previous` adapter for the block, then drop it (so the
    trained adapter is saved alone)."""
    model.load_adapter(str(adapter_dir), adapter_name=ADAPTER, is_trainable=False)
    try:
        yield PreviousAdapterTeacher(model, version)
    finally:
        model.delete_adapter(ADAPTER)
