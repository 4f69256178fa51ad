"""The cycle's teacher from `models.teacher`, and the weights that write with it.

    with cycle_teacher(settings, model, tokenizer, device, served, served_dir) as teacher:
        distill(..., teacher)
        with teacher_weights(teacher, model) as writer:   # a model to generate with
            generate_texts(writer, ...)

`previous` (the default): the model served when the cycle started, frozen (the base model while
nothing is promoted); `base`: the raw base weights (the student's adapter switched off);
`server:URL[#model]`: a completions server; anything else: a model folder sharing the student's
tokenizer (e.g. `sandbox:teacher`, the larger sandbox model, or Qwen/Qwen3-8B).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from knowledge.settings import Settings
from learner.modeling import resolve_model_ref
from learner.teachers import Teacher
from learner.teachers.base import BaseModelTeacher
from learner.teachers.local import LocalTeacher
from learner.teachers.previous import PreviousAdapterTeacher, previous_adapter
from learner.teachers.server import PREFIX, ServerTeacher


@contextmanager
def cycle_teacher(
    settings: Settings,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    served: str,
    served_dir: Path | None,
) -> Iterator[Teacher]:
    """The teacher `models.teacher` names, for the block (a `previous` adapter is dropped after).

    `served` is the version served when the cycle started ("base" when none), `served_dir` its
    verified adapter folder (None for the base).
    """
    ref = settings.models.teacher
    if ref == "previous" and served_dir is not None:
        with previous_adapter(model, served_dir, served) as teacher:
            yield teacher
    elif ref in ("previous", "base"):
        yield BaseModelTeacher(model, "previous (base)" if ref == "previous" else "base")
    elif ref.startswith(PREFIX):  # checked before any OPD step
        server = ServerTeacher.from_ref(ref, tokenizer)
        try:
            yield server
        finally:
            server.close()
    else:
        path = resolve_model_ref(settings, ref)
        yield LocalTeacher(path, tokenizer, device, settings.models.dtype)


def general_teacher(settings: Settings, model: PeftModel, teacher: Teacher) -> Teacher | None:
    """The teacher of OPD's general prompts when it is not `teacher` itself
    (`models.general_teacher: base` beside a previous adapter, a larger model or a server);
    None: `teacher` scores every prompt."""
    if settings.models.general_teacher == "teacher" or isinstance(teacher, BaseModelTeacher):
        return None
    return BaseModelTeacher(model, "base")


def check_teacher(settings: Settings, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a teacher the cycle could not use, before any work: a server teacher must answer
    and share the student's tokenizer and chat template (IncompatibleTeacherError /
    UpstreamUnavailableError); a `sandbox:` teacher must be built (ConfigError). The cycle opens
    the teacher again when distillation needs it."""
    ref = settings.models.teacher
    if ref.startswith(PREFIX):
        ServerTeacher.from_ref(ref, tokenizer).close()
    elif ref not in ("previous", "base"):
        resolve_model_ref(settings, ref)


def teacher_weights(teacher: Teacher, student: PeftModel) -> contextmanager[PreTrainedModel]:
    """A model that generates as the teacher does, for writing questions and answers: a local
    teacher's own model, the frozen previous adapter, else (the base teacher) the student's base
    weights with its adapter off. A server teacher writes through its own chat endpoint
    (learner.doc_questions.teacher_writer)."""
    if isinstance(teacher, LocalTeacher):
        return nullcontext(teacher.model)
    if isinstance(teacher, PreviousAdapterTeacher):
        return teacher.active()
    return _adapter_off(student)


@contextmanager
def _adapter_off(student: PeftModel) -> Iterator[PreTrainedModel]:
    with student.disable_adapter():
        yield student
