"""Turning documents and chats into packed, prompt-masked training rows.

A document contributes every token as a label; a chat contributes labels only on its assistant
turn (prompt tokens masked with IGNORE). Examples are packed back to back into rows of
`seq_len` tokens so no compute is spent on padding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from learner.generation import Message, chat_prompt
from learner.losses import IGNORE


@dataclass
class Anchor:
    """A reference model's top-K next-token distribution at each position of an example (row t:
    the token after position t), used where `mask_L` is set (learner/anchor.py)."""

    ids_L_K: torch.Tensor
    logprobs_L_K: torch.Tensor
    mask_L: torch.Tensor


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    anchor: Anchor | None = None


@dataclass
class AnchoredRows:
    """Packed rows with the anchors laid out alongside (zeros and mask off where none)."""

    rows_N_2_T: torch.Tensor
    anchor_ids_N_T_K: torch.Tensor
    anchor_logprobs_N_T_K: torch.Tensor
    anchor_mask_N_T: torch.Tensor


def document_example(tokenizer: PreTrainedTokenizerBase, text: str) -> Example:
    ids = tokenizer.encode(text.strip(), add_special_tokens=False)
    ids.append(tokenizer.pad_token_id)  # <|endoftext|>: documents end like pre-training documents
    return Example(ids, list(ids))


def chat_example(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], answer: str
) -> Example:
    prompt_ids = tokenizer.encode(chat_prompt(tokenizer, messages), add_special_tokens=False)
    answer_ids = tokenizer.encode(answer.strip() + "<|im_end|>\n", add_special_tokens=False)
    return Example(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def _shuffled(examples: list[Example], seed: int) -> list[Example]:
    order = list(examples)
    random.Random(seed).shuffle(order)
    return order


def pack(examples: list[Example], seq_len: int, pad_id: int, seed: int = 0) -> torch.Tensor:
    """Shuffle and pack into [N, 2, seq_len] (input ids, labels); long examples are split."""
    return _pack_ordered(_shuffled(examples, seed), seq_len, pad_id)


def pack_anchored(
    examples: list[Example], seq_len: int, pad_id: int, k: int, seed: int = 0
) -> AnchoredRows:
    """`pack` (same order for the same seed), with each example's anchor at its tokens."""
    order = _shuffled(examples, seed)
    rows = _pack_ordered(order, seq_len, pad_id)
    n_rows = rows.shape[0]
    ids, logprobs, masks = [], [], []
    for ex in order:
        length = len(ex.input_ids)
        if ex.anchor is None:
            ids.append(torch.zeros(length, k, dtype=torch.int32))
            logprobs.append(torch.zeros(length, k))
            masks.append(torch.zeros(length, dtype=torch.bool))
        else:
            ids.append(ex.anchor.ids_L_K.to(torch.int32))
            logprobs.append(ex.anchor.logprobs_L_K.float())
            masks.append(ex.anchor.mask_L.bool())
    pad = n_rows * seq_len - sum(len(m) for m in masks)
    ids.append(torch.zeros(pad, k, dtype=torch.int32))
    logprobs.append(torch.zeros(pad, k))
    masks.append(torch.zeros(pad, dtype=torch.bool))
    return AnchoredRows(
        rows,
        torch.cat(ids).view(n_rows, seq_len, k),
        torch.cat(logprobs).view(n_rows, seq_len, k),
        torch.cat(masks).view(n_rows, seq_len),
    )


def _pack_ordered(order: list[Example], seq_len: int, pad_id: int) -> torch.Tensor:
    ids: list[int] = []
    labels: list[int] = []
    for ex in order:
        ids.extend(ex.input_ids)
        labels.extend(ex.labels)
    n_rows = max(1, -(-len(ids) // seq_len))
    total = n_rows * seq_len
    ids.extend([pad_id] * (total - len(ids)))
    labels.extend([IGNORE] * (total - len(labels)))
    ids_N_T = torch.tensor(ids).view(n_rows, seq_len)
    labels_N_T = torch.tensor(labels).view(n_rows, seq_len)
    return torch.stack([ids_N_T, labels_N_T], dim=1)


def n_label_tokens(examples: list[Example]) -> int:
    return sum(sum(1 for x in ex.labels if x != IGNORE) for ex in examples)


def n_tokens(examples: list[Example]) -> int:
    """All tokens (prompts included): what packing lays out in rows."""
    return sum(len(ex.input_ids) for ex in examples)
