"""Instruction-formatted twins of QA pairs: the new facts learned under format instructions too.

Trained only in their plain form, new facts come back in that form whatever the prompt asks
(measured on the sandbox: a day-1 name kept capitalised in an all-lowercase answer, a required
keyword or postscript dropped after a memorised statement), so mid-training the facts erodes
instruction following on exactly the prompts that use them. A twin is the pair's question with
one or two verifiable instructions, phrased and combined as the base's instruction data is
(learner/instructions.py), and the pair's response rewritten to follow them by that module's fixed
rule. Every twin is checked with the IFEval checker before it is kept, so it needs no model and is
right by construction. The rules work on any short answer: the real profile's teacher-written pairs
get the same twins as the sandbox's.

    twins = formatted_twins(pairs, share=0.5, rng=random.Random(0))
"""

from __future__ import annotations

import random

from learner.instructions import Instruction, with_instructions
from learner.qa_pairs import QAPair

TITLE = "Answer"  # the title a twin's <<title>> instruction gets (any title passes IFEval)


def formatted(pair: QAPair, rng: random.Random) -> tuple[QAPair, list[Instruction]] | None:
    """(`pair` with one or two instructions drawn by `rng` added to its question and followed by
    its response, those instructions); None when no draw could be followed
    (learner/instructions.with_instructions)."""
    drawn = with_instructions(rng, pair.question, [pair.response], TITLE)
    if drawn is None:
        return None
    question, response, instrs = drawn
    return QAPair(question, response, pair.answer), instrs


def formatted_twins(pairs: list[QAPair], share: float, rng: random.Random) -> list[QAPair]:
    """A formatted twin for `share` of the pairs (drawn at random)."""
    chosen = rng.sample(pairs, round(share * len(pairs)))
    return [twin[0] for pair in chosen if (twin := formatted(pair, rng)) is not None]
