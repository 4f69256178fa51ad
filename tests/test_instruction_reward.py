"""The checker's reward for OPD's instructed prompts (learner/instruction_reward.py)."""

import random

import torch

from learner.instruction_reward import (
    carries_instruction,
    checker_rewards,
    draw_instructed,
    instructable,
    instruction_score,
)
from learner.instructions import IF_IDS, instruction_text, render_response, sample_kwargs
from learner.sampling import SampleBatch


def test_every_phrasing_is_recognised_whatever_its_kwargs():
    rng = random.Random(0)
    for instruction_id in IF_IDS:
        for _ in range(5):
            text = instruction_text(instruction_id, sample_kwargs(instruction_id, rng), rng)
            assert carries_instruction(f"Where does Ada work? {text}")
    assert not carries_instruction("Where does Ada work? Answer with her office, please.")


def test_instructions_are_drawn_only_onto_prompts_without_one():
    plain = [{"role": "user", "content": "Where does Ada work?"}]
    capital = [
        {"role": "user", "content": "Who leads Falcon? Please reply in all capital letters."}
    ]
    answered = [*plain, {"role": "assistant", "content": "Berlin."}]
    assert instructable([plain, capital, answered]) == [plain]
    drawn = draw_instructed([plain], random.Random(1), 1)[0]
    assert drawn.messages[-1]["content"].startswith("Where does Ada work? ")
    assert carries_instruction(drawn.messages[-1]["content"]) and plain[-1]["content"].endswith("?")
    # a response written to follow the drawn instructions scores 1, an empty one 0
    assert (
        instruction_score(
            render_response(["Ada works in Berlin."], drawn.instructions, "Ada"), drawn.instructions
        )
        == 1.0
    )
    assert instruction_score("", drawn.instructions) == 0.0


def test_the_score_is_the_share_of_instructions_followed():
    instrs = [("change_case:english_capital", {}), ("punctuation:no_comma", {})]
    assert instruction_score("ADA WORKS IN BERLIN.", instrs) == 1.0
    assert instruction_score("ADA, WORKS IN BERLIN.", instrs) == 0.5
    assert instruction_score("ada, in berlin", instrs) == 0.0


class _Chars:
    """A tokenizer stand-in: token t is the character chr(t); 0 is a special (stop) token."""

    def decode(self, ids: torch.Tensor, skip_special_tokens: bool = False) -> str:
        return "".join(chr(int(t)) for t in ids if not (skip_special_tokens and int(t) == 0))


def test_checker_rewards_score_each_row_under_its_prompts_instructions():
    rows = ["?? ABC", "?? abc", "?? XYZ", "?? nop"]  # two prompt tokens "??", then the answer
    seqs = torch.tensor([[ord(c) for c in r] + [0] for r in rows])
    mask = torch.zeros_like(seqs, dtype=torch.bool)
    mask[:, 3:] = True  # " ABC" + stop (the leading space does not change the checks)
    batch = SampleBatch(seqs, torch.ones_like(mask), mask, torch.zeros(seqs.shape), [0, 0, 1, 1])
    capital = [("change_case:english_capital", {})]
    assert checker_rewards(_Chars(), batch, [capital, None]).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert checker_rewards(_Chars(), batch, [None, capital]).tolist() == [0.0, 0.0, 1.0, 0.0]
