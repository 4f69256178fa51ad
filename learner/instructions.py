"""Verifiable instructions (the IFEval subset the project trains on and evaluates): how each is
phrased, its kwargs, which two may be combined, and a fixed rule that writes a response following
them. The sandbox's chat data and the formatted twins of QA pairs (learner/formatted_pairs.py) both
write their responses here, so a new fact is trained under exactly the instructions the base was.

    instrs = sample_instructions(random.Random(0))             # [(instruction_id, kwargs), ...]
    response = render_response(["Ada works in Lisbon."], instrs, title="Ada")
    assert follows_all(response, instrs)
"""

from __future__ import annotations

import json
import random
from typing import Any

from learner.evals.ifeval import check_instruction, count_words


def rows(text: str) -> list[list[str]]:
    """Parse `a | b | c` lines (keeps the tables one line per entry under ruff format)."""
    return [
        [p.strip().replace("\\n", "\n") for p in line.split("|")]
        for line in text.strip().splitlines()
    ]


# Filler sentences of "at least N words" answers | bullet fillers | end phrases.
FILLERS, BULLET_FILLERS, END_PHRASES = rows("""
I hope this helps you with your work. | Please contact your manager if anything is unclear. | You can also find more details on the company intranet. | The team is always happy to answer further questions. | Thank you for reading this message carefully.
Check the intranet for details. | Ask your manager for help. | Share updates with your team. | Keep your notes up to date. | Plan your week ahead.
Any other questions? | Is there anything else I can help with? | Let me know if you have additional questions | Have a nice day | That is all for now | Thank you for reading
""")
KEYWORDS = "budget schedule quality teamwork safety deadline feedback growth customer planning progress support training office coffee meeting report priority".split()
Instruction = tuple[str, dict[str, Any]]  # (IFEval instruction id, its kwargs)
LONG_WORDS = 34  # "at least N" responses always reach this many words (N <= 30)

# Instruction id: phrasings (IFEval's own first, then variants), used for training and eval alike.
IF_TEXT = {
    line.split(": ", 1)[0]: [
        p.strip().replace("\\n", "\n") for p in line.split(": ", 1)[1].split("|")
    ]
    for line in """
change_case:english_lowercase: Your entire response should be in English, and in all lowercase letters. No capital letters are allowed. | Please reply in all lowercase letters. | Write your whole answer in lowercase letters only.
change_case:english_capital: Your entire response should be in English, and in all capital letters. | Please reply in all capital letters. | Write your whole answer in capital letters only.
detectable_format:json_format: Entire output should be wrapped in JSON format. | Wrap your entire answer in JSON format. | Please format your whole answer as JSON.
detectable_format:number_bullet_lists: Your answer must contain exactly {num_bullets} bullet points. Use the markdown bullet points such as:\\n* This is point 1. | Answer with exactly {num_bullets} bullet points in markdown format. | Use exactly {num_bullets} markdown bullet points in your answer.
startend:end_checker: Finish your response with this exact phrase {end_phrase}. No other words should follow this phrase. | End your answer with the exact phrase "{end_phrase}". | Your reply must end with the phrase {end_phrase}
keywords:existence: Include keywords {kw} in the response. | Make sure to use the words {kw} in your answer. | Your answer must mention {kw}.
punctuation:no_comma: In your entire response, refrain from the use of any commas. | Do not use any commas in your answer. | Avoid commas entirely in your reply.
length_constraints:number_words: Answer with {relation} {num_words} words. | Your response should contain {relation} {num_words} words. | Use {relation} {num_words} words in your reply.
detectable_content:postscript: At the end of your response, please explicitly add a postscript starting with {postscript_marker} | Add a postscript starting with {postscript_marker} to your answer. | Please include a postscript that starts with {postscript_marker}
detectable_format:title: Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>. | Give your answer a title wrapped in double angular brackets like <<title>>. | Start with a title in double angular brackets such as <<my title>>.
""".strip().splitlines()
}
IF_IDS = list(IF_TEXT)
_SIMPLE = {"change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma"}
# Which second instruction may join the first (symmetric check below).
_PAIRS_OK = {
    "detectable_format:json_format": _SIMPLE | {"keywords:existence"},
    "length_constraints:number_words": _SIMPLE,
}


def _compatible(a: str, b: str) -> bool:
    if a == b or {a, b} == {"change_case:english_lowercase", "change_case:english_capital"}:
        return False
    return (a not in _PAIRS_OK or b in _PAIRS_OK[a]) and (b not in _PAIRS_OK or a in _PAIRS_OK[b])


def sample_kwargs(instruction_id: str, rng: random.Random) -> dict[str, Any]:
    """IFEval kwargs for one instruction (same names as Google's IFEval)."""
    if instruction_id == "detectable_format:number_bullet_lists":
        return {"num_bullets": rng.randint(2, 4)}
    if instruction_id == "startend:end_checker":
        return {"end_phrase": rng.choice(END_PHRASES)}
    if instruction_id == "keywords:existence":
        return {"keywords": rng.sample(KEYWORDS, rng.randint(1, 2))}
    if instruction_id == "length_constraints:number_words":
        if rng.random() < 0.5:
            return {"relation": "less than", "num_words": rng.randint(14, 30)}
        return {"relation": "at least", "num_words": rng.randint(10, 30)}
    if instruction_id == "detectable_content:postscript":
        return {"postscript_marker": rng.choice(["P.S.", "P.P.S"])}
    return {}


def sample_instructions(rng: random.Random, max_n: int = 2) -> list[Instruction]:
    first = rng.choice(IF_IDS)
    chosen = [first]
    if max_n > 1 and rng.random() < 0.4:
        chosen.append(rng.choice([i for i in IF_IDS if _compatible(first, i)]))
    return [(i, sample_kwargs(i, rng)) for i in chosen]


def instruction_text(instruction_id: str, kwargs: dict[str, Any], rng: random.Random) -> str:
    kw = " and ".join(kwargs.get("keywords", []))
    return rng.choice(IF_TEXT[instruction_id]).format(kw=kw, **kwargs)


def instruction_texts(instrs: list[Instruction], rng: random.Random) -> str:
    """The instructions' phrasings (each drawn by `rng`), to append to a prompt."""
    return " ".join(instruction_text(i, kw, rng) for i, kw in instrs)


def render_response(content: list[str], instrs: list[Instruction], title: str) -> str:
    """A response that follows `instrs`, built from content sentences (templated, so learnable)."""
    ids = dict(instrs)
    sentences = list(content)
    if nw := ids.get("length_constraints:number_words"):
        if nw["relation"] == "less than":
            sentences = sentences[:1]
        else:  # always long: the tiny model need not count, only tell the two relations apart
            i = 0
            while count_words(" ".join(sentences)) < LONG_WORDS:
                sentences.append(FILLERS[i % len(FILLERS)])
                i += 1
    bullets = ids.get("detectable_format:number_bullet_lists")
    if bullets:
        items = (sentences + BULLET_FILLERS)[: bullets["num_bullets"]]
        body = "\n".join(f"* {s}" for s in items)
    else:
        body = " ".join(sentences)
    if kw := ids.get("keywords:existence"):
        body += ("\n" if bullets else " ") + f"This answer mentions {' and '.join(kw['keywords'])}."
    if "detectable_format:json_format" in ids:
        body = json.dumps({"answer": body})
    if "detectable_format:title" in ids:
        body = f"<<{title}>>\n{body}"
    if ps := ids.get("detectable_content:postscript"):
        body += f"\n\n{ps['postscript_marker']} Feel free to ask me more questions."
    if end := ids.get("startend:end_checker"):
        body += f"\n{end['end_phrase']}"
    if "change_case:english_lowercase" in ids:
        body = body.lower()
    if "change_case:english_capital" in ids:
        body = body.upper()
    if "punctuation:no_comma" in ids:
        body = body.replace(",", "")
    return body


def follows_all(response: str, instrs: list[Instruction]) -> bool:
    return all(check_instruction(i, kw, response) for i, kw in instrs)


def with_instructions(
    rng: random.Random, prompt: str, content: list[str], title: str, tries: int = 20
) -> tuple[str, str, list[Instruction]] | None:
    """(`prompt` + the texts of one or two instructions drawn by `rng`, `content` rendered to
    follow them and checked with the IFEval checker, the instructions); None when no draw in
    `tries` could be followed (e.g. a long answer under "less than N words")."""
    for _ in range(tries):
        instrs = sample_instructions(rng)
        response = render_response(content, instrs, title)
        if follows_all(response, instrs):
            return f"{prompt} {instruction_texts(instrs, rng)}", response, instrs
    return None
