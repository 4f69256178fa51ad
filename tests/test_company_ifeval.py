"""The shipped IFEval-format set (learner/evals/company_ifeval.py): current, complete, and
readable by the original IFEval checkers (their agreement with protege's scoring:
tests/test_ifeval_parity.py).

.venv/bin/python -m pytest tests/test_company_ifeval.py -q
"""

from __future__ import annotations

from collections import Counter

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
from test_e2e import tiny_settings

from learner.datasets import eval_sets, read_jsonl
from learner.evals.company_ifeval import N_ITEMS, SHIPPED, company_items, render
from learner.evals.ifeval import SUPPORTED_INSTRUCTIONS, score_item


def test_the_shipped_file_is_what_the_generator_writes():
    assert SHIPPED.read_text() == render(company_items()), (
        "regenerate: .venv/bin/python -m learner.evals.company_ifeval > " + str(SHIPPED)
    )


def test_every_supported_id_leads_its_share_and_prompts_are_distinct():
    rows = read_jsonl(SHIPPED)
    assert len(rows) == N_ITEMS and len({r["prompt"] for r in rows}) == N_ITEMS
    leads = Counter(r["instruction_id_list"][0] for r in rows)
    assert set(leads) == set(SUPPORTED_INSTRUCTIONS)
    assert min(leads.values()) == N_ITEMS // len(SUPPORTED_INSTRUCTIONS)
    assert Counter(len(r["instruction_id_list"]) for r in rows).keys() == {1, 2, 3}
    for row in rows:
        assert len(set(row["instruction_id_list"])) == len(row["instruction_id_list"])


def test_the_official_checkers_take_every_item_as_it_is():
    for row in read_jsonl(SHIPPED):
        for instruction_id, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
            checker = INSTRUCTION_DICT[instruction_id](instruction_id)
            description = checker.build_description(**kwargs)  # refuses unknown kwargs
            assert set(checker.get_instruction_args() or {}) == set(kwargs)
            assert description
        score_item(row, "a reply")  # and protege's scorer


def test_outside_the_sandbox_the_gate_scores_the_shipped_set(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    settings.models.student = str(sandbox_test.student_dir)  # not sandbox:...
    sets = eval_sets(settings, [], tmp_path / "eval")
    assert sets.ifeval_file == SHIPPED and sets.qa_file is None
    settings.learner.eval.ifeval_file = str(sandbox_test.days[0].ifeval_file)  # configured wins
    assert (
        eval_sets(settings, [], tmp_path / "eval").ifeval_file == sandbox_test.days[0].ifeval_file
    )


def test_in_the_sandbox_the_gate_scores_every_days_ifeval_items(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    rows = read_jsonl(eval_sets(settings, [], tmp_path / "eval").ifeval_file)
    per_day = [read_jsonl(d.ifeval_file) for d in sandbox_test.days]
    assert len(per_day) >= 3 and rows == [r for day in per_day for r in day]
    assert len({r["key"] for r in rows}) == len(rows)  # no item twice
