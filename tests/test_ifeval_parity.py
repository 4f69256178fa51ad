"""protege's IFEval scoring against the official checkers (Google's instructions.py as packaged
by `if-verifiable`), strict and loose, on every instruction id protege supports.

    .venv/bin/python -m pytest tests/test_ifeval_parity.py -q

Items: the test sandbox's, the shipped company set's and one per hand-written case.
Responses: hand-made variants of each item (cases, lists, JSON, titles, endings, keywords, empty)
and the test sandbox student's own answers. The one known difference is the official
change_case checkers' language check (`langdetect.detect(text) == "en"`), which protege does not
make: langdetect calls short answers full of names another language ("HELLO TEAM.",
"uma berg reports to eriksen."). With that check answered "en", the two agree everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import langdetect
import pytest
from if_verifiable.common import evaluate_instructions
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
from test_ifeval import CASES

from learner.evals.company_ifeval import SHIPPED
from learner.evals.evaluate import read_jsonl
from learner.evals.ifeval import SUPPORTED_INSTRUCTIONS, score_item

TEXT = "The release checklist is owned by the Lumen team, and it helps with progress"


def official(item: dict, response: str) -> tuple[bool, bool]:
    _, scores = evaluate_instructions(
        response=response,
        instruction_id_list=item["instruction_id_list"],
        kwargs_list=item.get("kwargs") or [{} for _ in item["instruction_id_list"]],
        prompt=item.get("prompt", ""),
        instruction_registry=INSTRUCTION_DICT,
    )
    return scores.binary_strict == 1.0, scores.binary_loose == 1.0


def variants(item: dict) -> list[str]:
    """Responses that pass or fail each kind of instruction, built around the item's kwargs."""
    out = [TEXT, TEXT.lower(), TEXT.upper(), TEXT.replace(",", ""), "", "  ", '"' + TEXT + '"']
    out += [json.dumps({"answer": TEXT}), "```json\n" + json.dumps({"answer": TEXT}) + "\n```"]
    out += ["<<Release Notes>>\n" + TEXT, "<< >>\n" + TEXT, "Sure:\n<<Notes>>\n" + TEXT + "\n*"]
    out += ["* one\n* two\n* three", "* one\n* two", "* one\n- two", "**" + TEXT + "**"]
    out += [TEXT + "\n\nP.S. thanks", TEXT + " p.p.s bye", TEXT + "\nAny other questions?"]
    out += ["Sure.\n" + TEXT + "\nAny other questions?\n"]
    for kwargs in item.get("kwargs") or []:
        for value in kwargs.values():
            words = value if isinstance(value, list) else [value] if isinstance(value, str) else []
            for word in words:
                out += [f"{TEXT} {word}", f"{TEXT} {word} {word}".lower(), word]
    return out


def items(sandbox: Path) -> list[dict]:
    """The test sandbox's IFEval items, the shipped company set (learner/evals/company_ifeval.py)
    and one item per hand-written case (every supported id)."""
    rows = [r for path in sorted(sandbox.glob("days/*/ifeval.jsonl")) for r in read_jsonl(path)]
    rows += read_jsonl(SHIPPED)
    rows += [
        {"prompt": "", "instruction_id_list": [i], "kwargs": [kw], "good": good, "bad": bad}
        for i, kw, good, bad in CASES
    ]
    return rows


def disagreements(sandbox_test, student_answers: list[str]) -> list[tuple]:
    rows = items(sandbox_test.root)
    assert {i for r in rows for i in r["instruction_id_list"]} == set(SUPPORTED_INSTRUCTIONS)
    real = dict(zip((r["prompt"] for r in rows), student_answers, strict=False))
    found, n = [], 0
    for row in rows:
        responses = variants(row) + [row.get("good", ""), row.get("bad", "")]
        responses += [real[row["prompt"]]] if row["prompt"] in real else []
        for response in responses:
            n += 1
            mine, theirs = score_item(row, response), official(row, response)
            if mine != theirs:
                found.append((row["instruction_id_list"], row["kwargs"], response, mine, theirs))
    assert n > 1000  # enough pairs to mean something
    return found


@pytest.fixture(scope="module")
def student_answers(sandbox_test) -> list[str]:
    """The test sandbox student's greedy answers to its IFEval prompts (real model output)."""
    import torch

    from learner.generation import generate_texts
    from learner.modeling import load_causal_lm, load_tokenizer

    rows = items(sandbox_test.root)
    model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows if r["prompt"]]
    return generate_texts(model, tokenizer, prompts, max_new_tokens=32, batch_size=64)


def test_protege_agrees_with_the_official_checkers(sandbox_test, student_answers, monkeypatch):
    monkeypatch.setattr(langdetect, "detect", lambda text: "en")
    assert disagreements(sandbox_test, student_answers) == []


def test_the_only_difference_is_the_language_check(sandbox_test, student_answers):
    for ids, _, response, mine, theirs in disagreements(sandbox_test, student_answers):
        assert any(i.startswith("change_case:") for i in ids), (ids, response)
        assert mine == (True, True) or theirs == (False, False), (ids, response, mine, theirs)
        try:
            assert langdetect.detect(response) != "en", (ids, response)
        except langdetect.LangDetectException:
            pass  # the official checker then counts the response as passing
