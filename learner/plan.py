"""What the next cycle would train on, and roughly how long it would take (no training).

    protege train --now --dry-run [--json]

The estimate scales the newest finished cycle's wall time by the amount of work (tokens the
cycle will process); with no finished cycle yet it uses a deliberately rough CPU rate and says so.

Tests: .venv/bin/python -m pytest tests/test_runs_cli.py -q
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from sqlmodel import Session, col, select

from knowledge.db import open_database
from knowledge.errors import NothingToTrainError
from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner.datasets import eligible_documents, training_prompts
from learner.forgetting import rebuild_reason
from learner.modeling import load_tokenizer, resolve_model_ref
from learner.registry import Registry
from learner.tables import Run

# Only for the very first cycle: an order of magnitude, not a promise.
ROUGH_TOKENS_PER_SECOND = 2000.0
ROUGH_FIXED_SECONDS = 30.0  # model loading and the evaluations


@dataclass
class PlannedDocument:
    id: int
    name: str
    version: int
    tokens: int


@dataclass
class CyclePlan:
    served: str
    rebuild: str | None = None  # why the cycle would start from the base model (forgetting)
    documents: list[PlannedDocument] = field(default_factory=list)
    document_tokens: int = 0
    work_tokens: int = 0  # tokens mid-training and distillation will process
    estimated_seconds: float = 0.0
    estimate_basis: str = ""
    # allowed source -> items the cycle would take from it (documents, prompts); others are off
    sources: dict[str, int] = field(default_factory=dict)
    sources_off: list[str] = field(default_factory=list)  # sources learner.sources turns off
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def work_tokens(settings: Settings, document_tokens: int) -> int:
    """Tokens the cycle processes: mid-training (documents plus replay) and OPD samples."""
    mid = settings.learner.midtrain
    opd = settings.learner.distill
    midtrain_tokens = document_tokens * mid.epochs / mid.doc_fraction
    distill_tokens = opd.steps * opd.prompts_per_step * opd.group_size * opd.max_new_tokens
    return int(midtrain_tokens + distill_tokens)


def count_tokens(tokenizer, texts: list[str]) -> list[int]:  # noqa: ANN001
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


def _estimate(settings: Settings, work: int) -> tuple[float, str]:
    with Session(open_database(settings.db_url)) as session:
        runs = session.exec(
            select(Run).where(Run.status == "succeeded").order_by(col(Run.id).desc()).limit(5)
        ).all()
    for run in runs:
        metrics = json.loads(run.metrics_json or "{}")
        seconds = sum(metrics.get("seconds", {}).values())
        previous = metrics.get("work_tokens")
        if previous and seconds:
            return seconds * work / previous, f"scaled from run {run.id} ({seconds:.0f} s)"
    return (
        ROUGH_FIXED_SECONDS + work / ROUGH_TOKENS_PER_SECOND,
        f"rough guess ({ROUGH_TOKENS_PER_SECOND:.0f} tokens/s; no finished cycle to scale from)",
    )


def plan_cycle(settings: Settings) -> CyclePlan:
    """The documents the next cycle would select (same rule as `run_cycle`) and an estimate."""
    registry = Registry(settings)
    served = registry.served_version()
    store = KnowledgeStore(settings)
    rebuild = rebuild_reason(registry)
    trained_ids = [] if rebuild else registry.served_documents()
    plan = CyclePlan(served=served, rebuild=rebuild)
    plan.sources_off = [k for k, on in settings.learner.sources.model_dump().items() if not on]
    try:
        new_docs = eligible_documents(settings, store, trained_ids)
    except NothingToTrainError as exc:  # learner.sources.documents is off
        plan.message = str(exc)
        return plan
    if not new_docs:
        plan.message = "nothing new since the served adapter: the cycle would be skipped"
        return plan
    tokenizer = load_tokenizer(resolve_model_ref(settings, settings.models.student))
    counts = count_tokens(tokenizer, [store.document_text(d.id) for d in new_docs])
    plan.documents = [
        PlannedDocument(d.id, d.name, d.version, n) for d, n in zip(new_docs, counts, strict=True)
    ]
    plan.document_tokens = sum(counts)
    plan.sources = {"documents": len(new_docs), **training_prompts(settings).sources}
    plan.work_tokens = work_tokens(settings, plan.document_tokens)
    plan.estimated_seconds, plan.estimate_basis = _estimate(settings, plan.work_tokens)
    plan.estimated_seconds = round(plan.estimated_seconds, 1)
    plan.message = f"would train on {len(new_docs)} document(s), {plan.document_tokens} tokens"
    if rebuild:
        plan.message += f" (a rebuild: {rebuild})"
    return plan
