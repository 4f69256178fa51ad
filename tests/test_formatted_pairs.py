"""Instruction-formatted twins of QA pairs (learner/formatted_pairs.py)."""

from __future__ import annotations

import random

import pytest

from learner.evals.ifeval import check_instruction
from learner.evals.qa import qa_correct
from learner.formatted_pairs import END_PHRASE, FORMATS, formatted, formatted_twins
from learner.qa_pairs import QAPair

PAIR = QAPair(
    "Which office does Ada Brenner work in?",
    "Ada Brenner works in the Lisbon office, with Tom Weller, on the Quill project.",
    "Lisbon",
)
KWARGS = {
    "startend:end_checker": {"end_phrase": END_PHRASE},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
}


@pytest.mark.parametrize("instruction_id", sorted(FORMATS))
def test_every_twin_follows_its_instruction_and_keeps_the_answer(instruction_id):
    twin = formatted(PAIR, instruction_id)
    assert twin.question.startswith(PAIR.question) and twin.question != PAIR.question
    assert check_instruction(instruction_id, KWARGS.get(instruction_id, {}), twin.response)
    assert not check_instruction(instruction_id, KWARGS.get(instruction_id, {}), PAIR.response)
    assert qa_correct(twin.response, PAIR.answer)


def test_twins_cover_the_share_asked_for():
    pairs = [QAPair(f"Question {i}?", f"Answer {i}.", f"{i}") for i in range(40)]
    twins = formatted_twins(pairs, 0.5, random.Random(0))
    assert len(twins) == 20
    assert len({t.answer for t in twins}) == 20  # distinct pairs, not one pair twinned twice
    assert formatted_twins(pairs, 0.0, random.Random(0)) == []
