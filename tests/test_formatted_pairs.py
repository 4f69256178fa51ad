"""Instruction-formatted twins of QA pairs (learner/formatted_pairs.py)."""

from __future__ import annotations

import random

from learner.evals.ifeval import check_instruction
from learner.evals.qa import qa_correct
from learner.formatted_pairs import formatted, formatted_twins
from learner.instructions import IF_IDS
from learner.qa_pairs import QAPair

PAIR = QAPair(
    "Which office does Ada Brenner work in?",
    "Ada Brenner works in the Lisbon office, with Tom Weller, on the Quill project.",
    "Lisbon",
)


def test_every_twin_follows_its_instructions_and_keeps_the_answer() -> None:
    rng, seen = random.Random(0), set()
    for _ in range(300):
        result = formatted(PAIR, rng)
        assert result is not None
        twin, instrs = result
        assert twin.question.startswith(PAIR.question) and twin.question != PAIR.question
        for instruction_id, kwargs in instrs:
            assert check_instruction(instruction_id, kwargs, twin.response), (instrs, twin)
            seen.add(instruction_id)
        assert qa_correct(twin.response, PAIR.answer)
        assert twin.answer == PAIR.answer
    # every instruction the base was trained on, and pairs of them, get twins
    assert seen == set(IF_IDS)


def test_twins_pair_instructions_and_vary_their_wording() -> None:
    rng = random.Random(1)
    results = [formatted(PAIR, rng) for _ in range(300)]
    assert any(len(instrs) == 2 for _, instrs in results)
    lowercase = {t.question for t, instrs in results if instrs[0][0].endswith("lowercase")}
    assert len(lowercase) > 1


def test_twins_cover_the_share_asked_for() -> None:
    pairs = [QAPair(f"Question {i}?", f"Answer {i}.", f"{i}") for i in range(40)]
    twins = formatted_twins(pairs, 0.5, random.Random(0))
    assert len(twins) == 20
    assert len({t.answer for t in twins}) == 20  # distinct pairs, not one pair twinned twice
    assert formatted_twins(pairs, 0.0, random.Random(0)) == []
