"""Turning documents and chats into packed, prompt-masked training rows.

A document contributes every token as a label; a chat contributes labels only on its assistant
turn (prompt tokens masked with IGNORE). Whole examples are packed into rows of `seq_len` tokens
(first fit, little padding); an example never straddles two rows.
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


Segment = tuple[int, int, int]  # (example index in the order, first token, end token)


def _pieces(example: Example, seq_len: int) -> list[tuple[int, int]]:
    """(start, end) token ranges of one example that each fit a row. A document (every token a
    label) longer than a row is cut into row-sized pieces; a chat longer than a row keeps its last
    `seq_len` tokens, so its answer still sees as much of its prompt as fits."""
    n = len(example.input_ids)
    if n <= seq_len:
        return [(0, n)]
    if IGNORE not in example.labels:
        return [(i, min(n, i + seq_len)) for i in range(0, n, seq_len)]
    return [(n - seq_len, n)]


def placement(order: list[Example], seq_len: int, open_rows: int = 8) -> list[list[Segment]]:
    """Rows of whole example pieces, first fit over a few open rows (little padding).

    An example is never split across two rows: split, a chat's answer would be trained in a row
    that does not hold its question or instruction (teaching the model to say the answer, or a
    formatted reply, unprompted), which is what the base was never trained on either."""
    rows: list[tuple[int, list[Segment]]] = []  # (used tokens, segments) of the open rows
    done: list[list[Segment]] = []
    for index, example in enumerate(order):
        for start, end in _pieces(example, seq_len):
            size = end - start
            slot = next((k for k, (used, _) in enumerate(rows) if used + size <= seq_len), None)
            if slot is None:
                if len(rows) >= open_rows:  # close the fullest row
                    rows.sort(key=lambda r: r[0])
                    done.append(rows.pop()[1])
                rows.append((0, []))
                slot = len(rows) - 1
            used, segments = rows[slot]
            segments.append((index, start, end))
            rows[slot] = (used + size, segments)
    done.extend(segments for _, segments in rows)
    return done or [[]]


def n_rows(examples: list[Example], seq_len: int, seed: int = 0) -> int:
    """How many rows `pack(examples, seq_len, _, seed)` lays out (without building them)."""
    return len(placement(_shuffled(examples, seed), seq_len))


def pack(examples: list[Example], seq_len: int, pad_id: int, seed: int = 0) -> torch.Tensor:
    """Shuffle and pack whole examples into [N, 2, seq_len] (input ids, labels); see `placement`."""
    order = _shuffled(examples, seed)
    return _rows(order, placement(order, seq_len), seq_len, pad_id)


def pack_anchored(
    examples: list[Example], seq_len: int, pad_id: int, k: int, seed: int = 0
) -> AnchoredRows:
    """`pack` (same rows for the same seed), with each example's anchor at its tokens."""
    order = _shuffled(examples, seed)
    rows = placement(order, seq_len)
    ids_N_T_K = torch.zeros(len(rows), seq_len, k, dtype=torch.int32)
    logprobs_N_T_K = torch.zeros(len(rows), seq_len, k)
    mask_N_T = torch.zeros(len(rows), seq_len, dtype=torch.bool)
    for r, segments in enumerate(rows):
        at = 0
        for index, start, end in segments:
            anchor = order[index].anchor
            if anchor is not None:
                ids_N_T_K[r, at : at + end - start] = anchor.ids_L_K[start:end].to(torch.int32)
                logprobs_N_T_K[r, at : at + end - start] = anchor.logprobs_L_K[start:end].float()
                mask_N_T[r, at : at + end - start] = anchor.mask_L[start:end].bool()
            at += end - start
    return AnchoredRows(_rows(order, rows, seq_len, pad_id), ids_N_T_K, logprobs_N_T_K, mask_N_T)


def _rows(
    order: list[Example], rows: list[list[Segment]], seq_len: int, pad_id: int
) -> torch.Tensor:
    out_N_2_T = torch.full((len(rows), 2, seq_len), IGNORE, dtype=torch.long)
    out_N_2_T[:, 0] = pad_id
    for r, segments in enumerate(rows):
        ids = [t for i, a, b in segments for t in order[i].input_ids[a:b]]
        labels = [t for i, a, b in segments for t in order[i].labels[a:b]]
        out_N_2_T[r, 0, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        out_N_2_T[r, 1, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    return out_N_2_T


def n_label_tokens(examples: list[Example]) -> int:
    return sum(sum(1 for x in ex.labels if x != IGNORE) for ex in examples)
