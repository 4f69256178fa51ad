"""Verifiable instructions drawn onto OPD's general prompts, and the checker's reward for them.

The teacher of OPD is the model served when the cycle starts, so each night restores instruction
following only up to the level the previous night left, and small losses add up over nights.
The IFEval checker does not drift: some of each step's general prompts get one or two
instructions appended (learner/instructions.py, the table the sandbox's chat data and the
formatted twins use), and every answer the student samples to them is scored by the checker
(the share of its instructions followed). learner/distill.py adds that reward, relative to the
prompt's group of samples, to the reverse-KL advantage (`distill.instruction_reward`).

    stems = instructable(prompts)                      # prompts that carry no instruction yet
    drawn = draw_instructed(stems, random.Random(0), 4)
    reward = instruction_score("ALL CAPS ANSWER", drawn[0].instructions)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from learner.evals.ifeval import check_instruction
from learner.generation import Message
from learner.instructions import IF_TEXT, Instruction, instruction_texts, sample_instructions
from learner.sampling import SampleBatch


def _phrasing_pattern(phrasing: str) -> re.Pattern[str]:
    # "{num_words}" and the like match any text: the phrasing is recognised whatever its kwargs
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(phrasing)), re.DOTALL)


_PHRASINGS = [_phrasing_pattern(p) for texts in IF_TEXT.values() for p in texts]


@dataclass(frozen=True)
class InstructedPrompt:
    messages: list[Message]
    instructions: list[Instruction]


def carries_instruction(text: str) -> bool:
    """Whether `text` already holds a phrasing of a verifiable instruction (a second one drawn
    onto it could contradict it, e.g. lowercase and capitals)."""
    return any(p.search(text) for p in _PHRASINGS)


def instructable(prompts: list[list[Message]]) -> list[list[Message]]:
    """The prompts whose last turn is a user turn without a verifiable instruction."""
    return [
        p
        for p in prompts
        if p and p[-1]["role"] == "user" and not carries_instruction(p[-1]["content"])
    ]


def draw_instructed(
    stems: list[list[Message]], rng: random.Random, n: int
) -> list[InstructedPrompt]:
    """`n` of `stems` (drawn by `rng`), each with one or two instructions appended to its last
    user turn."""
    drawn = []
    for stem in rng.sample(stems, n):
        instrs = sample_instructions(rng)
        last = {**stem[-1], "content": f"{stem[-1]['content']} {instruction_texts(instrs, rng)}"}
        drawn.append(InstructedPrompt([*stem[:-1], last], instrs))
    return drawn


def instruction_score(response: str, instructions: list[Instruction]) -> float:
    """Share of `instructions` the IFEval checker finds followed in `response` (strict)."""
    checks = [check_instruction(i, kw, response) for i, kw in instructions]
    return sum(checks) / len(checks)


def checker_rewards(
    tokenizer: PreTrainedTokenizerBase,
    batch: SampleBatch,
    instructions: list[list[Instruction] | None],
) -> torch.Tensor:
    """Per sampled row, `instruction_score` of its answer under its prompt's instructions
    (`instructions[prompt]`); 0 for rows of prompts without any (a constant within their group,
    so their group-relative advantage is 0)."""
    rewards_B = torch.zeros(batch.sequences_B_T.shape[0])
    for b, (i, seq, mask) in enumerate(
        zip(batch.prompt_index_B, batch.sequences_B_T, batch.completion_mask_B_T, strict=True)
    ):
        if instructions[i] is not None:
            text = tokenizer.decode(seq[mask], skip_special_tokens=True)
            rewards_B[b] = instruction_score(text, instructions[i])
    return rewards_B
