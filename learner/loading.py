"""Load the student with a given adapter: `base`, `current` (the served one) or a version."""

from __future__ import annotations

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from knowledge.settings import Settings
from learner.modeling import load_causal_lm, load_tokenizer, resolve_model_ref, torch_device
from learner.registry import BASE, Registry


def load_student(
    settings: Settings, adapter: str = "current"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, resolved version). The adapter folder is checksum-verified first."""
    path = resolve_model_ref(settings, settings.models.student)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, torch_device(settings), settings.models.dtype)
    registry = Registry(settings)
    version = registry.served_version() if adapter == "current" else adapter
    if version == BASE:
        return model, tokenizer, BASE
    folder = registry.verify(version)
    return PeftModel.from_pretrained(model, str(folder)).eval(), tokenizer, version
