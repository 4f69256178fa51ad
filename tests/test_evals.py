"""QA scoring and evaluate_model on the test-size sandbox.

.venv/bin/python -m pytest tests/test_evals.py -q
"""

from __future__ import annotations

import json

import pytest

from knowledge.prompting import grounded_user_message
from learner.evals.evaluate import evaluate_model
from learner.evals.qa import (
    interference,
    majority_flags,
    new_values,
    normalize,
    qa_correct,
    qa_report,
)
from learner.modeling import load_causal_lm, load_tokenizer
from learner.sandbox.manifest import SandboxManifest


def test_normalize() -> None:
    assert normalize("  The Lisbon   office!  ") == "lisbon office"
    assert normalize("An A-Team, the end.") == "team end"


@pytest.mark.parametrize(
    ("prediction", "answer", "ok"),
    [
        ("Nora Vance works in the Lisbon office.", "Lisbon", True),
        ("nora vance reports to ada berg", "Ada Berg", True),
        ('{"answer": "THE SILVER BRIDGE PROJECT"}', "Silver Bridge", True),
        ("It launches in 2013.", "13", False),
        ("Ada Bergman", "Ada Berg", False),
        ("anything", "", False),
    ],
)
def test_qa_correct(prediction: str, answer: str, ok: bool) -> None:
    assert qa_correct(prediction, answer) is ok


def test_evaluate_model_keys_and_ranges(sandbox_test: SandboxManifest) -> None:
    import torch

    model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    day = sandbox_test.days[0]
    metrics = evaluate_model(
        model,
        tokenizer,
        qa_file=day.qa_file,
        ifeval_file=day.ifeval_file,
        known_qa_file=sandbox_test.known_qa_file,
        incontext_qa_file=sandbox_test.incontext_qa_file,
        max_new_tokens=16,
        batch_size=4,
        limit=5,
        progress=False,
    )
    fractions = ["qa_closed_book", "ifeval_strict", "ifeval_loose", "known_qa", "incontext_qa"]
    for key in fractions:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["ifeval_loose"] >= metrics["ifeval_strict"]
    assert {metrics[k] for k in ("n_qa", "n_ifeval", "n_known_qa", "n_incontext_qa")} == {5.0}
    only_qa = evaluate_model(
        model, tokenizer, qa_file=day.qa_file, limit=2, max_new_tokens=8, progress=False
    )
    assert set(only_qa) == {
        "qa_closed_book", "qa_majority", "qa_nonmajority", "n_qa", "qa_day1", "qa_day1_majority",
        "qa_day1_nonmajority", "n_qa_day1", "ifeval_strict", "ifeval_loose", "n_ifeval",
    }  # fmt: skip


def test_open_book_qa_asks_with_the_retrieved_passages(
    sandbox_test: SandboxManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import learner.evals.evaluate as evaluate

    model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    day = sandbox_test.days[0]
    rows = [json.loads(line) for line in day.qa_file.read_text().splitlines()[:4]]
    prompts: dict[str, list[str]] = {}
    real_generate = evaluate._generate

    def recording_generate(model, tokenizer, users, desc, **kwargs):  # noqa: ANN001, ANN202
        prompts[desc] = users
        return real_generate(model, tokenizer, users, desc, **kwargs)

    monkeypatch.setattr(evaluate, "_generate", recording_generate)
    asked: list[str] = []

    def passages_for(question: str) -> list[str]:
        asked.append(question)
        return [f"Passage about {question}", "Another passage."]

    metrics = evaluate_model(
        model,
        tokenizer,
        qa_file=day.qa_file,
        passages_for=passages_for,
        limit=4,
        max_new_tokens=8,
        progress=False,
    )
    assert asked == [r["question"] for r in rows]
    assert prompts["qa_open_book"] == [
        grounded_user_message(q, [f"Passage about {q}", "Another passage."]) for q in asked
    ]
    assert prompts["qa_closed_book"] == asked
    assert 0.0 <= metrics["qa_open_book"] <= 1.0 and metrics["n_qa"] == 4.0

    nothing = evaluate_model(
        model, tokenizer, qa_file=day.qa_file, passages_for=lambda q: [], limit=4,
        max_new_tokens=8, progress=False,
    )  # fmt: skip
    # no passages found: the open-book prompt is the bare question, so the same greedy answers
    assert nothing["qa_open_book"] == nothing["qa_closed_book"]


def _naive_report(rows, predictions):
    """Reference: the best constant answer per (set, group) and accuracy off its items."""
    from collections import Counter

    groups = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.get("set"), r.get("group")), []).append(i)
    majority_items = set()
    for idx in groups.values():
        counts = Counter(normalize(rows[i]["answer"]) for i in idx)
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if best[1] > 1:
            majority_items |= {i for i in idx if normalize(rows[i]["answer"]) == best[0]}
    correct = [qa_correct(p, r["answer"]) for p, r in zip(predictions, rows, strict=True)]
    rest = [c for i, c in enumerate(correct) if i not in majority_items]
    return len(majority_items) / len(rows), sum(correct) / len(rows), sum(rest) / len(rest)


def test_qa_report_matches_a_naive_reference():
    rows = [
        {"answer": "Delta", "group": "person.team", "set": "day1"},
        {"answer": "Delta", "group": "person.team", "set": "day1"},
        {"answer": "Ember", "group": "person.team", "set": "day1"},
        {"answer": "Lyon", "group": "person.city", "set": "day1"},  # all distinct: no majority
        {"answer": "Oslo", "group": "person.city", "set": "day1"},
        {"answer": "Ember", "group": "person.team", "set": "day2"},
        {"answer": "Ember", "group": "person.team", "set": "day2"},
    ]
    predictions = ["On Delta.", "Delta", "Delta", "Lyon", "Paris", "ember team", "Atlas"]
    report = qa_report(rows, predictions, "qa", new_sets={"day2"})
    baseline, accuracy, rest = _naive_report(rows, predictions)
    assert report["qa_majority"] == baseline == 4 / 7
    assert report["qa"] == accuracy == 4 / 7
    assert report["qa_nonmajority"] == rest == 1 / 3
    assert majority_flags(rows) == [True, True, False, False, False, True, True]
    assert report["qa_day2"] == 0.5 and report["qa_new"] == 0.5 and report["n_qa_new"] == 2
    assert report["qa_earlier"] == 3 / 5


def test_interference_counts_wrong_answers_that_name_a_new_value():
    rows = [
        {"answer": "Delta", "set": "day1"},
        {"answer": "Ember", "set": "day1"},
        {"answer": "Quartz", "set": "day2"},  # the night's new value
        {"answer": "Delta", "set": "day2"},  # an old value, also in day 2
    ]
    assert new_values(rows, {"day2"}) == {"quartz"}
    earlier = rows[:2]
    share, wrong = interference(earlier, ["Quartz team", "Atlas team"], {"quartz"})
    assert (share, wrong) == (0.5, 2)
    assert interference(earlier, ["Delta", "Ember"], {"quartz"}) == (0.0, 0)
