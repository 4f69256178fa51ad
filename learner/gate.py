"""The promotion gate: a candidate is served only if it learned without forgetting.

    ok, why = passes_gate(settings, before, base, after, new_sets={"day2"})

`before` scores the model served when the cycle started, `base` the base model, `after` the
candidate (learner.evals.evaluate keys). The rules, each a reason to refuse:

- new documents: on the new sets' items a constant answer cannot get right (non-majority
  items), the candidate must score at least the served model's plus `min_new_qa_gain`
  (without set information: all QA, at most `qa_tolerance` below the served model's);
- earlier documents: each earlier set's QA at most `earlier_qa_drop` below the served model's;
- earlier knowledge: QA on what the model knew before any document at most `known_qa_drop`
  below the base model's (so small drops cannot add up over nights);
- instruction following: IFEval strict at most `ifeval_margin` below the base model's.
"""

from __future__ import annotations

from collections.abc import Collection

from knowledge.settings import Settings


def _sets(metrics: dict) -> list[str]:
    """The closed-book QA sets a metrics dict has a block for (keys n_qa_<set>; "new" is not a
    set). Open-book blocks (n_qa_open_book_<set>) are reported, not gated: they measure
    retrieval and reading, which the cycle does not train, and the earlier rule is closed-book
    knowledge."""
    names = [k.removeprefix("n_qa_") for k in metrics if k.startswith("n_qa_")]
    return sorted(n for n in names if n != "new" and not n.startswith("open_book"))


def passes_gate(
    settings: Settings, before: dict, base: dict, after: dict, new_sets: Collection[str] = ()
) -> tuple[bool, str]:
    """(promote?, "passed" or the reasons it is refused); see the module doc."""
    gate = settings.learner.gate
    reasons = []
    if after.get("n_qa_new"):
        now, was = after["qa_new_nonmajority"], before.get("qa_new_nonmajority", 0.0)
        if now < was + gate.min_new_qa_gain:
            reasons.append(
                f"new-document QA (non-majority items) {now:.3f} < served {was:.3f}"
                + (f" + {gate.min_new_qa_gain}" if gate.min_new_qa_gain else "")
            )
    elif "qa_closed_book" in after and "qa_closed_book" in before:
        if after["qa_closed_book"] < before["qa_closed_book"] - gate.qa_tolerance:
            reasons.append(
                f"QA {after['qa_closed_book']:.3f} < served {before['qa_closed_book']:.3f}"
            )
    for name in _sets(after):
        key = f"qa_{name}"
        if name in new_sets or key not in before:
            continue
        if after[key] < before[key] - gate.earlier_qa_drop:
            reasons.append(
                f"earlier QA {name} {after[key]:.3f} < served {before[key]:.3f} - "
                f"{gate.earlier_qa_drop}"
            )
    # Against the base, not the served model: small drops must not add up night after night.
    known = base.get("known_qa", before.get("known_qa"))
    if "known_qa" in after and known is not None and after["known_qa"] < known - gate.known_qa_drop:
        reasons.append(
            f"known QA {after['known_qa']:.3f} < base {known:.3f} - {gate.known_qa_drop}"
        )
    if (
        "ifeval_strict" in after
        and after["ifeval_strict"] < base["ifeval_strict"] - gate.ifeval_margin
    ):
        reasons.append(
            f"IFEval {after['ifeval_strict']:.3f} < base {base['ifeval_strict']:.3f} - "
            f"{gate.ifeval_margin}"
        )
    return (not reasons, "; ".join(reasons) or "passed")
