"""IFEval checkers against hand-written pass/fail responses (strict and loose).

.venv/bin/python -m pytest tests/test_ifeval.py -q
"""

from __future__ import annotations

import pytest

from knowledge.errors import UnsupportedInstructionError
from learner.evals.ifeval import SUPPORTED_INSTRUCTIONS, check_instruction, count_words, score_item

# (instruction id, kwargs, passing response, failing response)
CASES = [
    ("change_case:english_lowercase", {}, "all lower case here.", "Not all lower case."),
    ("change_case:english_capital", {}, "ALL CAPS HERE.", "ALL CAPS but one."),
    (
        "detectable_format:json_format",
        {},
        '```json\n{"answer": "Lisbon"}\n```',
        '{"answer": Lisbon}',
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "* one\n* two",
        "* one\n* two\n- three",
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Hi. Any other questions?",
        "Any other questions? Bye.",
    ),
    (
        "keywords:existence",
        {"keywords": ["budget", "Team"]},
        "The team budget.",
        "The budget only.",
    ),
    ("punctuation:no_comma", {}, "No commas here.", "One, comma."),
    (
        "length_constraints:number_words",
        {"relation": "less than", "num_words": 4},
        "one two three",
        "one two three four",
    ),
    (
        "length_constraints:number_words",
        {"relation": "at least", "num_words": 4},
        "one two three four",
        "one two three",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Hello.\n\nP.S. Bye.",
        "Hello. PS bye.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Hello.\np.p.s bye",
        "Hello. P.S. bye.",
    ),
    ("detectable_format:title", {}, "<<My Title>>\nText.", "<< >>\nText without title."),
    ("startend:quotation", {}, '"quoted"', "not quoted"),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "good words", "a bad word"),
    (
        "keywords:frequency",
        {"keyword": "team", "frequency": 2, "relation": "at least"},
        "team and team",
        "one team",
    ),
]


@pytest.mark.parametrize(("instruction_id", "kwargs", "good", "bad"), CASES)
def test_checker_pass_and_fail(instruction_id: str, kwargs: dict, good: str, bad: str) -> None:
    assert check_instruction(instruction_id, kwargs, good)
    assert not check_instruction(instruction_id, kwargs, bad)


def test_every_generated_instruction_has_a_case() -> None:
    from learner.instructions import IF_IDS

    assert set(IF_IDS) <= {c[0] for c in CASES} <= set(SUPPORTED_INSTRUCTIONS)


def test_empty_response_never_follows() -> None:
    assert not check_instruction("punctuation:no_comma", {}, "   ")


def test_none_kwargs_are_ignored() -> None:
    # The Hugging Face IFEval copy fills unused kwargs with None.
    assert check_instruction("punctuation:no_comma", {"num_words": None}, "fine")


def test_count_words_like_ifeval() -> None:
    assert count_words("Hello, world! It's 2024.") == 5


def test_unsupported_instruction_names_supported_ids() -> None:
    with pytest.raises(UnsupportedInstructionError) as err:
        check_instruction("language:response_language", {"language": "de"}, "Hallo")
    assert "punctuation:no_comma" in str(err.value)


def _item(ids: list[str], kwargs: list[dict]) -> dict:
    return {"key": 1, "prompt": "p", "instruction_id_list": ids, "kwargs": kwargs}


def test_score_item_strict_and_loose() -> None:
    ends = _item(["startend:end_checker"], [{"end_phrase": "Bye"}])
    assert score_item(ends, "Hello. Bye") == (True, True)
    # Loose drops the last line; strict does not.
    assert score_item(ends, "Hello. Bye\nSure thing") == (False, True)
    # Loose drops the first line ("Sure! Here is JSON:") so the rest parses as JSON.
    js = _item(["detectable_format:json_format"], [{}])
    assert score_item(js, 'Sure! Here is JSON:\n{"a": 1}') == (False, True)
    # Loose removes `*`: a markdown-bold title line is then lowercase-clean.
    low = _item(["change_case:english_lowercase"], [{}])
    assert score_item(low, "Title:\nall lower") == (False, True)
    assert score_item(low, "ALL UPPER") == (False, False)


def test_score_item_requires_all_instructions() -> None:
    item = _item(["change_case:english_lowercase", "punctuation:no_comma"], [{}, {}])
    assert score_item(item, "lower, with comma") == (False, False)
    assert score_item(item, "lower without comma") == (True, True)


def test_loose_removes_asterisks() -> None:
    item = _item(["detectable_format:title"], [{}])
    assert score_item(item, "no title") == (False, False)
    bullets = _item(["detectable_format:number_bullet_lists"], [{"num_bullets": 1}])
    # "**bold**" lines are not bullets; with `*` removed the dash bullet is the only one.
    assert score_item(bullets, "- one\n* two") == (False, True)
