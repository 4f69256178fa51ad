"""Loading models, tokenizers and adapters the same way everywhere.

Pitfall this module exists for: in transformers 5.x `tokenizer.padding_side = "left"` is not saved,
so it is passed to `from_pretrained` on every load (batched generation needs left padding).
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import constants, try_to_load_from_cache
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from knowledge.errors import ConfigError
from knowledge.settings import Settings
from learner.sandbox.manifest import load_manifest, sandbox_root

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def require_local_model(ref: str) -> str:
    """`ref` unchanged when it is a model folder, or a Hub id whose config and weights are in
    the local Hugging Face cache; else a one-line ConfigError naming the fix (nothing downloads
    at run time, so a missing model must fail before any work, not deep inside a load)."""
    if Path(ref).expanduser().is_dir():
        return ref
    if ref.startswith(("/", ".", "~")) or ref.count("/") != 1:
        raise ConfigError(f"model folder {ref} does not exist (models.student / models.teacher)")
    config = try_to_load_from_cache(ref, "config.json")
    snapshot = Path(config).parent if isinstance(config, str) else None
    if (
        snapshot is None
        or not any(snapshot.glob("*.safetensors"))
        and not any(snapshot.glob("*.bin"))
    ):
        raise ConfigError(
            f"model {ref} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}): "
            f"fetch it once with `huggingface-cli download {ref}` where there is internet (or "
            "set HF_HOME to a cache that has it), or set the model to a local folder"
        )
    return ref


def resolve_model_ref(settings: Settings, ref: str) -> str:
    """`sandbox:student` / `sandbox:teacher` -> folder of the built sandbox; a model folder or a
    cached Hub id unchanged (require_local_model)."""
    if not ref.startswith("sandbox:"):
        return require_local_model(ref)
    manifest = load_manifest(
        sandbox_root(settings.sandbox_dir, settings.sandbox.size, settings.sandbox.seed)
    )
    name = ref.split(":", 1)[1]
    if name == "student":
        return str(manifest.student_dir)
    if name == "teacher":
        if manifest.teacher_dir is None:
            raise ConfigError(
                "the sandbox has no larger teacher; build it with `protege sandbox build --teacher`"
            )
        return str(manifest.teacher_dir)
    raise ConfigError(f"unknown sandbox model {ref!r} (sandbox:student or sandbox:teacher)")


def torch_device(settings: Settings) -> torch.device:
    want = settings.models.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"profile {settings.profile!r} needs a CUDA GPU and none is visible")
    return torch.device(want)


def configure_threads(settings: Settings) -> None:
    if settings.models.torch_threads:
        torch.set_num_threads(settings.models.torch_threads)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str | Path, device: torch.device, dtype: str = "float32"
) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    model.to(device)
    model.eval()
    return model


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an assistant turn (`<|im_end|>` in the Qwen chat format, plus eos)."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)
