"""Closed-book / in-context QA scoring, and the honest report around it.

    qa_correct("Nora Vance works in the Lisbon office.", "Lisbon")  # True
    qa_correct("It launches in 2013.", "13")                         # False: whole words only
    report = qa_report(rows, predictions, new_sets={"day1"})        # see qa_report

A QA figure alone flatters when answers repeat (11 of 16 new people on one team: answering the
team with the most common value already scores well). So every report carries the majority
baseline beside the accuracy (answer each question with the most common answer of its `group`,
e.g. "person.team", within its `set`, e.g. "day1") and the accuracy on the items whose answer is
not that majority answer, which a constant answer cannot score on.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
DEFAULT_SET = "qa"  # rows without a "set" (or legacy "day") field


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, drop articles, collapse whitespace (SQuAD-style)."""
    text = _PUNCT.sub(" ", text.lower())
    words = [w for w in text.split() if w not in {"a", "an", "the"}]
    return " ".join(words)


def qa_correct(prediction: str, answer: str) -> bool:
    """Whether the normalised answer occurs in the normalised prediction as whole words."""
    want = normalize(answer)
    if not want:
        return False
    return f" {want} " in f" {normalize(prediction)} "


def set_of(row: dict[str, Any]) -> str:
    """The eval set a QA row belongs to (a sandbox day, a document version's set, ...)."""
    return str(row.get("set") or row.get("day") or DEFAULT_SET)


def majority_flags(rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Per row: is its answer the majority answer of its (set, group)? Rows without a group share
    one group per set. The majority answer is the most common one (ties: the first in sorted
    order), so the flagged share is exactly what that one constant answer scores. A group whose
    answers are all different has none: no constant answer beats chance there."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        key = (set_of(row), str(row.get("group", "")))
        counts.setdefault(key, Counter())[normalize(row["answer"])] += 1
    majority = {
        key: min(counter, key=lambda v: (-counter[v], v))
        for key, counter in counts.items()
        if max(counter.values()) > 1
    }
    return [
        majority.get((set_of(r), str(r.get("group", "")))) == normalize(r["answer"]) for r in rows
    ]


def _fraction(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def qa_report(
    rows: Sequence[dict[str, Any]],
    predictions: Sequence[str],
    prefix: str = "qa",
    new_sets: Collection[str] = (),
) -> dict[str, float]:
    """Accuracy, majority baseline and non-majority accuracy, overall and per set.

    Keys (prefix P): P (all rows), P_majority (the baseline), P_nonmajority, n_P; for each set S
    named in the rows (a "set" or "day" field): P_S, P_S_majority, P_S_nonmajority, n_P_S; with
    `new_sets`: P_new, P_new_majority, P_new_nonmajority, n_P_new (rows of those sets) and
    P_earlier (the other rows).
    """
    correct = [qa_correct(p, r["answer"]) for p, r in zip(predictions, rows, strict=True)]
    majority = majority_flags(rows)
    out: dict[str, float] = {}

    def block(name: str, idx: list[int]) -> None:
        out[name] = _fraction([correct[i] for i in idx])
        out[f"{name}_majority"] = _fraction([majority[i] for i in idx])
        out[f"{name}_nonmajority"] = _fraction([correct[i] for i in idx if not majority[i]])
        out[f"n_{name}"] = float(len(idx))

    everything = list(range(len(rows)))
    block(prefix, everything)
    for name in sorted({set_of(r) for r in rows if r.get("set") or r.get("day")}):
        block(f"{prefix}_{name}", [i for i in everything if set_of(rows[i]) == name])
    if new_sets:
        new = [i for i in everything if set_of(rows[i]) in new_sets]
        block(f"{prefix}_new", new)
        out[f"{prefix}_earlier"] = _fraction([correct[i] for i in everything if i not in new])
    return out


def new_values(rows: Sequence[dict[str, Any]], new_sets: Collection[str]) -> set[str]:
    """Normalised answers that occur only in the new sets' rows (values the cycle introduced)."""
    new = {normalize(r["answer"]) for r in rows if set_of(r) in new_sets}
    old = {normalize(r["answer"]) for r in rows if set_of(r) not in new_sets}
    return {v for v in new - old if v}


def interference(
    rows: Sequence[dict[str, Any]], predictions: Sequence[str], values: Collection[str]
) -> tuple[float, int]:
    """(share of wrong answers that contain one of `values`, number of wrong answers).

    On questions about earlier knowledge, a wrong answer that names a value only the new
    documents introduced is the new facts overwriting old ones, not mere forgetting.
    """
    wrong = [p for p, r in zip(predictions, rows, strict=True) if not qa_correct(p, r["answer"])]
    carrying = [p for p in wrong if any(qa_correct(p, v) for v in values)]
    return (len(carrying) / len(wrong) if wrong else 0.0), len(wrong)
