"""Verifiable instructions and their response rule (learner/instructions.py)."""

from __future__ import annotations

import random

from learner.evals.ifeval import check_instruction
from learner.instructions import IF_IDS, render_response, sample_kwargs


def test_rendered_responses_follow_their_instructions() -> None:
    rng = random.Random(0)
    for instruction_id in IF_IDS:
        for _ in range(20):
            kwargs = sample_kwargs(instruction_id, rng)
            response = render_response(
                ["Ada Berg works in the Oslo office."], [(instruction_id, kwargs)], "Ada"
            )
            assert check_instruction(instruction_id, kwargs, response), (instruction_id, response)
