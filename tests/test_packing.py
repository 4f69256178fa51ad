"""Packing whole examples into training rows (learner/packing.py)."""

from __future__ import annotations

import random

import torch

from learner.losses import IGNORE
from learner.packing import Example, n_rows, pack, pack_anchored, placement

PAD = 0


def _chat(rng: random.Random, n_prompt: int, n_answer: int) -> Example:
    ids = [rng.randrange(1, 500) for _ in range(n_prompt + n_answer)]
    return Example(ids, [IGNORE] * n_prompt + ids[n_prompt:])


def _doc(rng: random.Random, n: int) -> Example:
    ids = [rng.randrange(1, 500) for _ in range(n)]
    return Example(ids, list(ids))


def _find(row: list[int], piece: list[int]) -> bool:
    return any(row[i : i + len(piece)] == piece for i in range(len(row) - len(piece) + 1))


def test_no_example_straddles_two_rows():
    rng = random.Random(0)
    examples = [_chat(rng, rng.randint(5, 40), rng.randint(3, 20)) for _ in range(300)]
    rows = pack(examples, 128, PAD, seed=1)
    ids = [r.tolist() for r in rows[:, 0]]
    for ex in examples:  # each chat lies whole inside one row, its answer after its prompt
        assert any(_find(row, ex.input_ids) for row in ids)
    labels = rows[:, 1]
    assert int((labels != IGNORE).sum()) == sum(
        sum(x != IGNORE for x in e.labels) for e in examples
    )
    # labels line up with the ids they label
    trained = labels != IGNORE
    assert torch.equal(rows[:, 0][trained], labels[trained])
    # first fit keeps padding low
    assert (rows[:, 0] == PAD).float().mean() < 0.1


def test_n_rows_counts_the_rows_pack_lays_out():
    """Mid-training sizes its learning-rate schedule and progress bar with `n_rows`: whole
    examples leave gaps, so there are more rows than tokens / seq_len."""
    rng = random.Random(2)
    examples = [_chat(rng, rng.randint(5, 60), rng.randint(3, 60)) for _ in range(200)]
    examples += [_doc(rng, rng.randint(20, 300)) for _ in range(20)]
    tokens = sum(len(e.input_ids) for e in examples)
    for seed in range(4):
        rows = pack(examples, 128, PAD, seed=seed)
        assert n_rows(examples, 128, seed) == rows.shape[0] > -(-tokens // 128)


def test_a_long_document_is_cut_into_rows_and_a_long_chat_keeps_its_end():
    rng = random.Random(1)
    doc, chat = _doc(rng, 150), _chat(rng, 90, 10)
    rows = placement([doc, chat], 64)
    pieces = sorted((a, b) for row in rows for i, a, b in row if i == 0)
    assert pieces == [(0, 64), (64, 128), (128, 150)]  # every document token, in row-sized pieces
    assert [(a, b) for row in rows for i, a, b in row if i == 1] == [(36, 100)]  # the last 64
    packed = pack([chat], 64, PAD)
    assert packed[0, 1].tolist()[-10:] == chat.input_ids[-10:]  # its answer is kept whole


def test_pack_anchored_lays_out_the_same_rows():
    rng = random.Random(2)
    examples = [_chat(rng, rng.randint(5, 30), rng.randint(3, 10)) for _ in range(20)]
    packed = pack_anchored(examples, 48, PAD, k=2, seed=3)
    assert torch.equal(packed.rows_N_2_T, pack(examples, 48, PAD, seed=3))
    assert not packed.anchor_mask_N_T.any()  # no example carried an anchor
