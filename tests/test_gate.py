"""The promotion gate: QA, IFEval against the base, and earlier knowledge.

.venv/bin/python -m pytest tests/test_gate.py -q
"""

from knowledge.settings import GateConfig, Settings
from learner.pipeline import passes_gate

BASE = {"qa_closed_book": 0.1, "ifeval_strict": 0.70, "known_qa": 0.95}
SERVED = {"qa_closed_book": 0.2, "ifeval_strict": 0.68, "known_qa": 0.90}


def _gate(**after: float) -> tuple[bool, str]:
    settings = Settings(learner={"gate": GateConfig(ifeval_margin=0.05, known_qa_drop=0.05)})
    return passes_gate(settings, SERVED, BASE, {**SERVED, **after})


def test_a_better_candidate_passes():
    assert _gate(qa_closed_book=0.5, ifeval_strict=0.69, known_qa=0.86) == (True, "passed")


def test_each_rule_refuses_on_its_own():
    ok, why = _gate(qa_closed_book=0.19)
    assert not ok and why.startswith("QA 0.190 < served 0.200")
    ok, why = _gate(ifeval_strict=0.64)
    assert not ok and why.startswith("IFEval 0.640 < base 0.700")
    ok, why = _gate(known_qa=0.84)  # earlier knowledge fell 6 points: more than 5
    assert not ok and why.startswith("known QA 0.840 < served 0.900")
