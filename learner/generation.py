"""Batched decoding with a local transformers model (evals, background replay, OPD sampling).

texts = generate_texts(model, tokenizer, [[{"role": "user", "content": "Hi"}]], max_new_tokens=32)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StaticCache

from learner.modeling import stop_token_ids

Message = dict[str, str]


@contextmanager
def lora_merged(model: PreTrainedModel) -> Iterator[None]:
    """LoRA folded into the base weights inside the block, the exact base weights restored after.

    Sampling is a loop of small forward passes; unmerged, every adapted projection costs three
    matmuls instead of one (bench/opd_throughput.py: about a fifth of the sampling time on the
    sandbox). `unmerge` alone would subtract the delta back with rounding (in bf16 a drift of the
    frozen base that grows with every step), so the base weights are copied and put back exactly.
    """
    layers = [
        m
        for m in model.modules()
        if isinstance(m, BaseTunerLayer) and not m.merged and not m.disable_adapters
    ]
    saved = [
        [p.detach().clone() for p in layer.get_base_layer().parameters(recurse=False)]
        for layer in layers
    ]
    try:
        with torch.no_grad():
            for layer in layers:
                layer.merge()
        yield
    finally:
        with torch.no_grad():
            for layer, originals in zip(layers, saved, strict=True):
                layer.merged_adapters.clear()
                params = layer.get_base_layer().parameters(recurse=False)
                for param, original in zip(params, originals, strict=True):
                    param.copy_(original)  # weight, and bias (a LoRA bias merges into it)


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    """The prompt text for `messages` ending with an open assistant turn (Qwen chat format)."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def sample_from(logits_B_V: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(token_B, logprob_B): the argmax (temperature 0, logprob 0) or one token drawn from
    softmax(logits / temperature) by inverting its CDF at a uniform draw, with the log-prob of
    the drawn token under the model's own distribution, softmax(logits) (vLLM's raw log-probs):
    OPD's advantage and importance ratio are about the model, whatever temperature drew the
    sample (a lower one puts OPD on the states greedy decoding visits).

    The inverse CDF needs one uniform per row: `torch.multinomial` over the vocabulary cost 4 ms
    a step at batch 64 on this CPU (a fifth of OPD's sampling time), the inverse CDF 0.1 ms.
    """
    if temperature <= 0:
        return logits_B_V.argmax(-1), torch.zeros(logits_B_V.shape[0], device=logits_B_V.device)
    logits_B_V = logits_B_V.float()
    cdf_B_V = torch.softmax(logits_B_V / temperature, -1).cumsum(-1)
    u_B_1 = torch.rand(cdf_B_V.shape[0], 1, device=cdf_B_V.device) * cdf_B_V[:, -1:]
    # right=True: the first index whose CDF exceeds u, so a zero-probability token is never drawn
    token_B = (
        torch.searchsorted(cdf_B_V, u_B_1, right=True).squeeze(1).clamp(max=cdf_B_V.shape[1] - 1)
    )
    logprobs_B_V = torch.log_softmax(logits_B_V, -1)
    return token_B, logprobs_B_V.gather(-1, token_B.unsqueeze(1)).squeeze(1)


@torch.no_grad()
def decode(
    model: PreTrainedModel,
    input_ids_B_P: torch.Tensor,
    attention_mask_B_P: torch.Tensor,
    max_new_tokens: int,
    stops: list[int],
    pad_id: int,
    temperature: float = 0.0,
    drop_finished: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(new_B_N, logprobs_B_N): the continuation of left-padded prompts, greedy (temperature 0)
    or sampled, up to each row's first stop token (pad after it; N stops early once every row
    has stopped); logprobs are those of `sample_from` (0 when greedy).

    The LoRA is merged (`lora_merged`) and the KV cache preallocated for this call (a static
    cache: the default one grows by concatenation at every token). The loop is written out
    rather than `model.generate`: on the sandbox a decoding step is a few small matmuls, and
    generate's per-step work (logits processors, stopping criteria, input preparation,
    multinomial sampling) cost about as much. Greedy answers equal generate's (tested).
    Rows that have stopped leave the batch (`drop_finished`; off only for the side-by-side
    bench/opd_step_speed.py).
    """
    B, P = input_ids_B_P.shape
    device = input_ids_B_P.device
    cache = StaticCache(config=model.config, max_cache_len=P + max_new_tokens)
    # A = the rows still decoding: `rows_A` are their indices in the batch
    mask_A_L = torch.cat([attention_mask_B_P, attention_mask_B_P.new_ones(B, max_new_tokens)], 1)
    positions_B_P = (attention_mask_B_P.long().cumsum(-1) - 1).clamp(min=0)  # skip left padding
    last_A_1 = positions_B_P[:, -1:]
    stops_S = torch.tensor(stops, device=device)
    new_B_N = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs_B_N = torch.zeros(B, max_new_tokens, device=device)
    rows_A = torch.arange(B, device=device)
    done_A = torch.zeros(B, dtype=torch.bool, device=device)
    n = 0
    with lora_merged(model):
        out = model(
            input_ids=input_ids_B_P,
            attention_mask=mask_A_L[:, :P],
            position_ids=positions_B_P,
            cache=cache,
            cache_position=torch.arange(P, device=device),
            use_cache=True,
            logits_to_keep=1,
        )
        while n < max_new_tokens:
            token_A, logprob_A = sample_from(out.logits[:, -1], temperature)
            live_A = ~done_A
            new_B_N[rows_A[live_A], n] = token_A[live_A]
            logprobs_B_N[rows_A[live_A], n] = logprob_A[live_A]
            done_A |= torch.isin(token_A, stops_S)
            n += 1
            if n == max_new_tokens or bool(done_A.all()):
                break
            if drop_finished and 4 * int(done_A.sum()) >= len(done_A):
                # Finished rows leave the batch once they are a quarter of it: OPD's longest
                # sample sets the loop's length while answers average under half of it, and
                # each dropped row is work saved at every later step (a compaction copies the
                # cache once, so it is not done for every finished row).
                keep_A = ~done_A
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[keep_A], layer.values[keep_A]
                rows_A, token_A, mask_A_L, last_A_1 = (
                    rows_A[keep_A], token_A[keep_A], mask_A_L[keep_A], last_A_1[keep_A]
                )  # fmt: skip
                done_A = done_A[keep_A]
            out = model(
                input_ids=torch.where(done_A, pad_id, token_A).unsqueeze(1),
                attention_mask=mask_A_L[:, : P + n],
                position_ids=last_A_1 + n,
                cache=cache,
                cache_position=torch.tensor([P + n - 1], device=device),
                use_cache=True,
            )
    return new_B_N[:, :n], logprobs_B_N[:, :n]


@torch.no_grad()
def complete_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: list[str],
    max_new_tokens: int,
    batch_size: int = 32,
) -> list[str]:
    """Greedy continuations of plain text (no chat template): the cloze probe's document recall."""
    outputs: list[str] = []
    device = next(model.parameters()).device
    for start in range(0, len(prefixes), batch_size):
        batch = prefixes[start : start + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(
            device
        )
        stops = stop_token_ids(tokenizer) + [tokenizer.pad_token_id]
        new_tokens, _ = decode(
            model, enc["input_ids"], enc["attention_mask"], max_new_tokens, stops,
            tokenizer.pad_token_id,
        )  # fmt: skip
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return [text.strip() for text in outputs]


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[Message]],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 32,
    progress: object | None = None,
) -> list[str]:
    """Greedy (temperature 0) or sampled completions, one string per conversation."""
    completions = generate_completions(
        model, tokenizer, conversations, max_new_tokens, temperature, batch_size, progress
    )
    return [text for text, _ in completions]


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[Message]],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 32,
    progress: object | None = None,
) -> list[tuple[str, bool]]:
    """(text, finished) per conversation: `finished` is False where the answer was cut off at
    `max_new_tokens` before the model ended its turn."""
    outputs: list[tuple[str, bool]] = []
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start : start + batch_size]
        prompts = [chat_prompt(tokenizer, messages) for messages in batch]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            device
        )
        new_tokens, _ = decode(
            model, enc["input_ids"], enc["attention_mask"], max_new_tokens, stops,
            tokenizer.pad_token_id, temperature,
        )  # fmt: skip
        finished = torch.isin(new_tokens, torch.tensor(stops, device=new_tokens.device)).any(1)
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        outputs.extend((t.strip(), bool(f)) for t, f in zip(texts, finished.tolist(), strict=True))
        if progress is not None:
            progress.update(len(batch))
    return outputs
