"""Pre-training the sandbox's tiny Qwen3 models from scratch on documents + ChatML chats.

    model = make_model(ModelSpec(hidden=192, layers=4, heads=4, intermediate=512), tokenizer)
    rows = pack(encode_documents(tok, docs) + encode_chats(tok, chats), seq_len=256, rng=rng)
    stats = pretrain(model, rows, TrainSpec(steps=1000), seed=0)

Chats are trained on assistant tokens only (prompts masked), documents on every token. Examples
are packed whole into fixed-length rows (never split), so an in-context question is never cut
off from its passages.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

from learner.generation import Message
from learner.sandbox.tokenizer import IM_END, IM_START, PAD, core_tokenizer

IGNORE = -100
Example = tuple[list[int], list[int]]  # (input ids, labels with IGNORE on untrained tokens)


@dataclass(frozen=True)
class ModelSpec:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int | None = None
    max_positions: int = 1024


@dataclass(frozen=True)
class TrainSpec:
    steps: int
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    clip: float = 1.0

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_size * self.seq_len


def make_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> Qwen3ForCausalLM:
    """A freshly initialised Qwen3 causal LM with tied embeddings, eos = `<|im_end|>`."""
    torch.manual_seed(seed)
    im_end, pad = tokenizer.convert_tokens_to_ids([IM_END, PAD])
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads or spec.heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        eos_token_id=im_end,
        pad_token_id=pad,
        bos_token_id=None,
        use_cache=True,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = pad
    return model


def encode_chats(
    tokenizer: PreTrainedTokenizerBase,
    chats: list[list[Message]],
    train_prompt: Callable[[list[Message]], bool] | None = None,
) -> list[Example]:
    """Chats ending with an assistant reply: every assistant reply + `<|im_end|>` trained (a
    multi-turn chat teaches each answer), everything else masked unless `train_prompt(chat)`."""
    core = core_tokenizer(tokenizer)
    out = []
    for chat in chats:
        # Each turn encoded apart, as at generation time (the prompt ends the turn header, and
        # the reply is generated after it).
        pieces, trained = [], []
        for message in chat:
            header = f"{IM_START}{message['role']}\n"
            pieces += [header, message["content"] + IM_END, "\n"]
            trained += [False, message["role"] == "assistant", False]
        ids: list[int] = []
        labels: list[int] = []
        whole = bool(train_prompt and train_prompt(chat))
        for enc, train in zip(
            core.encode_batch(pieces, add_special_tokens=False), trained, strict=True
        ):
            ids += enc.ids
            labels += enc.ids if train or whole else [IGNORE] * len(enc.ids)
        out.append((ids, labels))
    return out


def encode_documents(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int
) -> list[Example]:
    """Plain text, every token trained, `<|endoftext|>` after each; split into seq_len pieces."""
    core = core_tokenizer(tokenizer)
    eot = tokenizer.convert_tokens_to_ids(PAD)
    out = []
    for enc in core.encode_batch(texts, add_special_tokens=False):
        ids = enc.ids + [eot]
        out.extend(
            (ids[i : i + seq_len], ids[i : i + seq_len]) for i in range(0, len(ids), seq_len)
        )
    return out


def pack(examples: list[Example], seq_len: int, rng: random.Random, pad_id: int) -> torch.Tensor:
    """Shuffle and pack whole examples into rows: returns [n_rows, 2, seq_len] (ids, labels)."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    open_rows: list[tuple[list[int], list[int]]] = []
    done = []
    for i in order:
        ids, labels = examples[i]
        ids, labels = ids[:seq_len], labels[:seq_len]
        row = next((r for r in open_rows if len(r[0]) + len(ids) <= seq_len), None)
        if row is None:
            if len(open_rows) >= 8:  # close the fullest row; a few open rows keep padding low
                open_rows.sort(key=lambda r: len(r[0]))
                done.append(open_rows.pop())
            row = ([], [])
            open_rows.append(row)
        row[0].extend(ids)
        row[1].extend(labels)
    done.extend(open_rows)
    rows = torch.full((len(done), 2, seq_len), IGNORE, dtype=torch.long)
    rows[:, 0] = pad_id
    for k, (ids, labels) in enumerate(done):
        rows[k, 0, : len(ids)] = torch.tensor(ids)
        rows[k, 1, : len(labels)] = torch.tensor(labels)
    return rows[
        torch.randperm(len(rows), generator=torch.Generator().manual_seed(rng.randrange(2**31)))
    ]


def lr_lambda(spec: TrainSpec):  # noqa: ANN201 - a schedule closure for LambdaLR
    def schedule(step: int) -> float:
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return schedule


def pretrain(
    model: Qwen3ForCausalLM,
    rows: torch.Tensor,
    spec: TrainSpec,
    seed: int,
    progress: bool = True,
    desc: str = "pretrain",
) -> dict[str, float]:
    """AdamW with warmup + cosine, grad clipping; cycles over `rows` if they run out."""
    torch.manual_seed(seed)
    model.train()
    model.config.use_cache = False  # no KV cache while training (it only costs time)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec))
    start, seen, ema = time.time(), 0, None
    bar = tqdm(range(spec.steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.arange(step * spec.batch_size, (step + 1) * spec.batch_size) % len(rows)
        batch = rows[idx]
        out = model(input_ids=batch[:, 0], labels=batch[:, 1])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seen += batch[:, 0].numel()
        loss = out.loss.item()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        bar.set_postfix(
            loss=f"{ema:.3f}", tok_s=f"{seen / (time.time() - start):.0f}", refresh=False
        )
    model.eval()
    model.config.use_cache = True
    return {"final_loss": float(ema or 0.0), "tokens": float(seen), "seconds": time.time() - start}
