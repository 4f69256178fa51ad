"""The sandbox tokenizer: byte-level BPE with the Qwen ChatML special tokens and chat template.

    tok = train_tokenizer(texts, vocab_size=1536, out_dir=Path("/tmp/tok"))
    tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)

It is trained on the background corpus + chat data only (never on later days' documents), so new
entity names arrive as unseen merges, as they would for a real model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from learner.generation import Message

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]

# Qwen ChatML without thinking blocks: `enable_thinking` is accepted (callers pass it) and ignored.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def render_chat(messages: list[Message], add_generation_prompt: bool) -> str:
    """Python mirror of CHAT_TEMPLATE (fast path for building training data; a test checks both)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: Path
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts`, save it (with chat template) to `out_dir` and return it."""
    core = Tokenizer(models.BPE())
    # add_prefix_space=False: prompt and response can be encoded separately and concatenated.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tokenizer = wrap_tokenizer(core)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def wrap_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around `core` with eos `<|im_end|>`, pad `<|endoftext|>`."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=1024,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def core_tokenizer(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A copy of the underlying `tokenizers.Tokenizer` with padding and truncation off (batch
    encoding without Python overhead)."""
    # A copy, not the shared backend: any `tokenizer(..., padding=True)` call (batched eval does
    # one) leaves left-padding enabled on the backend, and `encode_batch` would then pad every
    # example to the longest in the set with `<|endoftext|>`, which training labels then include
    # (that is how the teacher, trained after the student's eval, learned to answer nothing).
    core = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    core.no_padding()
    core.no_truncation()
    return core
