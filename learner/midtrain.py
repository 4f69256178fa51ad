"""Recipe: mid-training a LoRA adapter on new documents mixed with re-sampled background chat.

The background chat answers are sampled from the current model itself (on-policy replay), so
replay teaches "keep behaving as you do" rather than some other model's style. Documents are
`cfg.doc_fraction` of the label tokens, chat the rest; prompt tokens are masked; rows are packed.

    stats = main(peft_model, tokenizer, documents=[...], chat_prompts=[...], cfg=settings.learner.midtrain)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from knowledge.errors import BadInputError
from knowledge.settings import MidtrainConfig
from learner.generation import Message, generate_texts
from learner.losses import causal_lm_loss
from learner.packing import Example, chat_example, document_example, n_label_tokens, pack
from learner.sampling import position_ids_for


def sample_background(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    target_tokens: int,
    cfg: MidtrainConfig,
    seed: int,
    progress: bool = True,
) -> list[Example]:
    """Answers to chat prompts sampled from the current model until ~target_tokens label tokens."""
    if target_tokens <= 0 or not prompts:
        return []
    order = list(prompts)
    random.Random(seed).shuffle(order)
    examples: list[Example] = []
    batch = min(32, max(1, target_tokens // 16))
    bar = tqdm(total=target_tokens, desc="background replay", unit="tok", disable=not progress)
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        answers = generate_texts(
            model,
            tokenizer,
            chunk,
            cfg.background_max_new_tokens,
            cfg.background_temperature,
            batch,
        )
        done = n_label_tokens(examples)
        for messages, answer in zip(chunk, answers, strict=True):
            if answer and done < target_tokens:
                examples.append(chat_example(tokenizer, messages, answer))
                done += n_label_tokens(examples[-1:])
        bar.update(done - bar.n)
        if done >= target_tokens:
            break
    bar.close()
    return examples


def _lr_at(step: int, total: int, cfg: MidtrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: list[str],
    chat_prompts: list[list[Message]],
    cfg: MidtrainConfig,
    seed: int = 0,
    log: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train the model's active adapter in place; returns summary stats."""
    if not documents:
        raise BadInputError("mid-training needs at least one document")
    torch.manual_seed(seed)
    doc_examples = [document_example(tokenizer, text) for text in documents]
    doc_tokens = n_label_tokens(doc_examples)
    chat_target = int(doc_tokens * (1 - cfg.doc_fraction) / cfg.doc_fraction)
    t0 = time.perf_counter()
    chat_examples = sample_background(
        model, tokenizer, chat_prompts, chat_target, cfg, seed, progress
    )
    sample_seconds = time.perf_counter() - t0
    examples = doc_examples + chat_examples
    rows_per_epoch = pack(examples, cfg.seq_len, tokenizer.pad_token_id, seed).shape[0]
    steps_per_epoch = max(1, -(-rows_per_epoch // cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    model.train()
    step, tokens_seen, last_loss = 0, 0, float("nan")
    t_train = time.perf_counter()
    bar = tqdm(total=total_steps, desc="mid-train", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        rows = pack(examples, cfg.seq_len, tokenizer.pad_token_id, seed + epoch).to(device)
        for start in range(0, rows.shape[0], cfg.batch_size):
            ids_B_T, labels_B_T = rows[start : start + cfg.batch_size].unbind(1)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_steps, cfg)
            attention = torch.ones_like(ids_B_T, dtype=torch.bool)
            logits = model(input_ids=ids_B_T, position_ids=position_ids_for(attention)).logits
            loss = causal_lm_loss(logits, labels_B_T)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            step += 1
            tokens_seen += ids_B_T.numel()
            last_loss = loss.item()
            rate = tokens_seen / max(1e-9, time.perf_counter() - t_train)
            bar.set_postfix(epoch=epoch + 1, loss=f"{last_loss:.3f}", tok_s=f"{rate:,.0f}")
            bar.update(1)
            if log:
                log({"stage": "midtrain", "step": step, "epoch": epoch + 1, "loss": last_loss})
    bar.close()
    model.eval()
    train_seconds = time.perf_counter() - t_train
    return {
        "midtrain_steps": step,
        "midtrain_final_loss": last_loss,
        "midtrain_doc_tokens": doc_tokens,
        "midtrain_chat_tokens": n_label_tokens(chat_examples),
        "midtrain_tokens_seen": tokens_seen,
        "midtrain_sample_seconds": round(sample_seconds, 2),
        "midtrain_train_seconds": round(train_seconds, 2),
    }
