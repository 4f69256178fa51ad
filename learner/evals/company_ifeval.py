"""The shipped IFEval-format set for a company deployment (no hand-written file needed).

    .venv/bin/python -m learner.evals.company_ifeval > learner/evals/data/company_ifeval.jsonl
    items = company_items()          # what that file holds (tests/test_company_ifeval.py checks)

How it was made: written for this project, not taken from Google's IFEval. Each prompt is a
workplace writing task (an email, an announcement, a summary, advice, an explanation for a new
colleague) about one of TOPICS, followed by one to three instructions. Instruction texts are
IFEval's own phrasings and kwargs names, so the original checkers score the set unchanged
(tests/test_ifeval_parity.py runs them beside protege's). Every instruction id protege supports
(learner.evals.ifeval.SUPPORTED_INSTRUCTIONS) leads at least N_ITEMS / len(ids) prompts; further
instructions are drawn among the ids that cannot contradict the ones already chosen. The draw is
seeded, so the file is reproducible and a test checks it is current.

The cycle scores it when `learner.eval.ifeval_file` is unset outside the sandbox (the sandbox
keeps its own held-out set). It measures format-following only, as IFEval does: whether the
answer is about the topic is not checked.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from learner.evals.ifeval import SUPPORTED_INSTRUCTIONS

SHIPPED = Path(__file__).parent / "data" / "company_ifeval.jsonl"
N_ITEMS = 390  # 30 per instruction id as the first instruction
SEED = 0

TASKS = (
    "Write a short email to your team about {topic}.",
    "Write an announcement for the company intranet about {topic}.",
    "Summarize what a new colleague should know about {topic}.",
    "Give a manager three pieces of advice about {topic}.",
    "Explain {topic} to someone in their first week at the company.",
    "Draft a message to the facilities team about {topic}.",
    "Write a short FAQ entry about {topic}.",
    "Describe the pros and cons of {topic}.",
    "Write a reminder for the weekly newsletter about {topic}.",
    "Write a note to a customer explaining {topic}.",
)
TOPICS = (
    "the new expense policy", "booking meeting rooms", "the quarterly all-hands",
    "remote work on Fridays", "the onboarding checklist", "the office move", "laptop upgrades",
    "the parental leave policy", "the holiday schedule", "the security awareness training",
    "the travel approval process", "the annual performance review", "the mentoring program",
    "the new coffee machine", "the bike to work scheme", "password rotation", "the visitor badge",
    "the internal hackathon", "the customer support rota", "the cloud cost review",
    "the data retention rules", "the fire drill", "the team offsite", "the hiring freeze",
    "the new project tracker", "the kitchen cleaning rota", "desk sharing",
    "the charity fundraiser", "the wellbeing week", "the release freeze in December",
)  # fmt: skip
KEYWORDS = (
    "deadline", "budget", "feedback", "priority", "schedule", "safety", "colleagues",
    "customer", "policy", "training", "quality", "support",
)  # fmt: skip
END_PHRASES = ("Any other questions?", "Is there anything else I can help with?",
               "Let me know if you have additional questions.")  # fmt: skip

TEXT = {
    "change_case:english_lowercase": "Your entire response should be in English, and in all "
    "lowercase letters. No capital letters are allowed.",
    "change_case:english_capital": "Your entire response should be in English, and in all "
    "capital letters.",
    "detectable_format:json_format": "Entire output should be wrapped in JSON format. You can "
    "use markdown ticks such as ```.",
    "detectable_format:number_bullet_lists": "Your answer must contain exactly {num_bullets} "
    "bullet points. Use the markdown bullet points such as:\n* This is point 1.\n* This is "
    "point 2",
    "startend:end_checker": "Finish your response with this exact phrase {end_phrase} No other "
    "words should follow this phrase.",
    "keywords:existence": "Include keywords {keywords} in the response.",
    "punctuation:no_comma": "In your entire response, refrain from the use of any commas.",
    "length_constraints:number_words": "Answer with {relation} {num_words} words.",
    "detectable_content:postscript": "At the end of your response, please explicitly add a "
    "postscript starting with {postscript_marker}",
    "detectable_format:title": "Your answer must contain a title, wrapped in double angular "
    "brackets, such as <<poem of joy>>.",
    "startend:quotation": "Wrap your entire response with double quotation marks.",
    "keywords:forbidden_words": "Do not include keywords {forbidden_words} in the response.",
    "keywords:frequency": "In your response, the word {keyword} should appear {relation} "
    "{frequency} times.",
}
# Pairs that cannot both hold (or that one checker's reading of the other makes unfair).
_WHOLE = {"detectable_format:json_format", "startend:quotation"}  # shape the entire output
_ENDS = {"startend:end_checker", "detectable_content:postscript"}  # claim the last words
CONFLICTS = [
    {"change_case:english_lowercase", "change_case:english_capital"},
    {"change_case:english_lowercase", "detectable_content:postscript"},  # "P.S." is capitals
    {"change_case:english_lowercase", "startend:end_checker"},  # the end phrases have capitals
    {"change_case:english_capital", "startend:end_checker"},
    {"change_case:english_capital", "detectable_format:json_format"},  # JSON keys stay lowercase
    *({a, b} for a in _WHOLE for b in SUPPORTED_INSTRUCTIONS if b != a and b not in {
        "keywords:existence", "keywords:forbidden_words", "keywords:frequency",
        "change_case:english_lowercase", "punctuation:no_comma"}),
    *({a, b} for a in _ENDS for b in _ENDS if a != b),
]  # fmt: skip


def _kwargs(instruction_id: str, rng: random.Random, taken: set[str]) -> dict[str, Any]:
    """IFEval kwargs for one instruction; keywords never reused within an item."""

    def words(n: int) -> list[str]:
        chosen = rng.sample([k for k in KEYWORDS if k not in taken], n)
        taken.update(chosen)
        return chosen

    relation = rng.choice(["less than", "at least"])
    return {
        "detectable_format:number_bullet_lists": lambda: {"num_bullets": rng.randint(2, 5)},
        "startend:end_checker": lambda: {"end_phrase": rng.choice(END_PHRASES)},
        "keywords:existence": lambda: {"keywords": words(rng.randint(1, 2))},
        "length_constraints:number_words": lambda: {
            "relation": relation,
            "num_words": rng.choice([40, 60, 80, 100])
            if relation == "less than"
            else rng.choice([30, 50, 80]),
        },  # fmt: skip
        "detectable_content:postscript": lambda: {
            "postscript_marker": rng.choice(["P.S.", "P.P.S"])
        },
        "keywords:forbidden_words": lambda: {"forbidden_words": words(rng.randint(1, 2))},
        "keywords:frequency": lambda: {
            "keyword": words(1)[0],
            "relation": relation,
            "frequency": rng.randint(2, 3) if relation == "at least" else rng.randint(2, 4),
        },
    }.get(instruction_id, dict)()


def _text(instruction_id: str, kwargs: dict[str, Any]) -> str:
    shown = {k: ", ".join(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return TEXT[instruction_id].format(**shown)


def _compatible(candidate: str, chosen: list[str]) -> bool:
    return all(candidate != c and {candidate, c} not in CONFLICTS for c in chosen)


def company_items(n: int = N_ITEMS, seed: int = SEED) -> list[dict[str, Any]]:
    """The set: IFEval rows {"key", "prompt", "instruction_id_list", "kwargs"}."""
    rng = random.Random(seed)
    ids = sorted(SUPPORTED_INSTRUCTIONS)
    items = []
    for key in range(n):
        chosen = [ids[key % len(ids)]]  # every id leads the same number of prompts
        for _ in range(rng.choice([0, 1, 1, 2])):
            options = [i for i in ids if _compatible(i, chosen)]
            if options:
                chosen.append(rng.choice(options))
        taken: set[str] = set()
        kwargs = [_kwargs(i, rng, taken) for i in chosen]
        task = rng.choice(TASKS).format(topic=rng.choice(TOPICS))
        texts = " ".join(_text(i, kw) for i, kw in zip(chosen, kwargs, strict=True))
        items.append(
            {"key": key, "prompt": f"{task} {texts}", "instruction_id_list": chosen,
             "kwargs": kwargs}
        )  # fmt: skip
    return items


def render(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


if __name__ == "__main__":
    sys.stdout.write(render(company_items()))
