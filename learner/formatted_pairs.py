"""Instruction-formatted twins of QA pairs: the new facts learned under format instructions too.

Trained only in their plain form, new facts come back in that form whatever the prompt asks
(measured on the sandbox: a day-1 name kept capitalised in an all-lowercase answer, an end
phrase dropped after a memorised statement), so mid-training the facts erodes instruction
following on exactly the prompts that use them. A twin is the pair's question with one
verifiable instruction (IFEval's own wording) and the pair's response rewritten to follow it
by a fixed rule, so the twin needs no model and is right by construction (each rule is checked
against IFEval's checker in the tests). The rules work on any short answer: the real profile's
teacher-written pairs get the same twins as the sandbox's.

    twins = formatted_twins(pairs, share=0.5, rng=random.Random(0))
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from learner.qa_pairs import QAPair

END_PHRASE = "Is there anything else I can help with?"

# Instruction id -> (the instruction as IFEval words it, the rule that makes a response follow it).
FORMATS: dict[str, tuple[str, Callable[[str], str]]] = {
    "change_case:english_lowercase": (
        "Your entire response should be in English, and in all lowercase letters. "
        "No capital letters are allowed.",
        str.lower,
    ),
    "change_case:english_capital": (
        "Your entire response should be in English, and in all capital letters.",
        str.upper,
    ),
    "detectable_format:json_format": (
        "Entire output should be wrapped in JSON format.",
        lambda r: json.dumps({"answer": r}),
    ),
    "punctuation:no_comma": (
        "In your entire response, refrain from the use of any commas.",
        lambda r: r.replace(",", ""),
    ),
    "startend:end_checker": (
        f"Finish your response with this exact phrase {END_PHRASE} "
        "No other words should follow this phrase.",
        lambda r: f"{r}\n{END_PHRASE}",
    ),
    "detectable_content:postscript": (
        "At the end of your response, please explicitly add a postscript starting with P.S.",
        lambda r: f"{r}\n\nP.S. Feel free to ask me more questions.",
    ),
    "detectable_format:title": (
        "Your answer must contain a title, wrapped in double angular brackets, such as "
        "<<poem of joy>>.",
        lambda r: f"<<Answer>>\n{r}",
    ),
}


def formatted(pair: QAPair, instruction_id: str) -> QAPair:
    """`pair` with the instruction `instruction_id` added to its question and followed by its
    response."""
    text, rule = FORMATS[instruction_id]
    return QAPair(f"{pair.question} {text}", rule(pair.response), pair.answer)


def formatted_twins(pairs: list[QAPair], share: float, rng: random.Random) -> list[QAPair]:
    """A formatted twin for `share` of the pairs (drawn at random), each with a random format."""
    chosen = rng.sample(pairs, round(share * len(pairs)))
    ids = sorted(FORMATS)
    return [formatted(pair, rng.choice(ids)) for pair in chosen]
