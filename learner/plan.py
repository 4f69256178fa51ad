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
from knowledge.tables import Document
from learner.datasets import eligible_documents, training_prompts
from learner.forgetting import rebuild_reason
from learner.modeling import load_tokenizer, resolve_model_ref
from learner.registry import BASE, Registry
from learner.tables import Run

# Only for the very first cycle: an order of magnitude, not a promise.
ROUGH_TOKENS_PER_SECOND = 2000.0
ROUGH_FIXED_SECONDS = 30.0  # model loading and the evaluations


@dataclass(frozen=True)
class Selection:
    """The documents a cycle works on, chosen once for `run_cycle` and `plan_cycle`."""

    served: str  # the version served when the cycle starts ("base" when none)
    rebuild: str | None  # why the cycle starts from the base model (a fresh LoRA), or None
    new: list[Document]  # what mid-training learns as new: every eligible document on a rebuild
    fresh: list[Document]  # new to the served adapter: the eval's new sets, the gate's gain
    earlier: list[Document]  # in the served adapter's lineage, replayed (none on a rebuild)
    continued_ids: list[int]  # the lineage of the adapter continued (superseded versions too)

    @property
    def start(self) -> str:
        """The adapter the cycle continues ("base": a fresh LoRA)."""
        return BASE if self.rebuild else self.served

    @property
    def lineage(self) -> list[int]:
        """Every document version the trained adapter will have learned."""
        return sorted(set(self.continued_ids) | {d.id for d in self.new})


def select_documents(settings: Settings, registry: Registry, store: KnowledgeStore) -> Selection:
    """Which documents the next cycle trains on, and whether it starts from the base model:
    after forgetting (learner/forgetting.py), or every night with `learner.start: base` once
    something new arrived. NothingToTrainError when `learner.sources.documents` is off."""
    served = registry.served_version()
    served_ids = registry.served_documents()
    fresh = eligible_documents(settings, store, served_ids)
    rebuild = rebuild_reason(registry)
    if rebuild is None and fresh and served != BASE and settings.learner.start == "base":
        rebuild = f"learner.start is base: a fresh LoRA on every document, not {served} continued"
    if rebuild:
        return Selection(served, rebuild, eligible_documents(settings, store, []), fresh, [], [])
    earlier = [d for d in store.list_documents() if d.id in set(served_ids)]
    return Selection(served, None, fresh, fresh, earlier, served_ids)


@dataclass
class PlannedDocument:
    id: int
    name: str
    version: int
    tokens: int


@dataclass
class CyclePlan:
    served: str
    rebuild: str | None = None  # why the cycle would start from the base model
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
    store = KnowledgeStore(settings)
    plan = CyclePlan(served=registry.served_version())
    plan.sources_off = [k for k, on in settings.learner.sources.model_dump().items() if not on]
    try:
        selection = select_documents(settings, registry, store)
    except NothingToTrainError as exc:  # learner.sources.documents is off
        plan.message = str(exc)
        return plan
    plan.rebuild, new_docs = selection.rebuild, selection.new
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
    if plan.rebuild:
        plan.message += f" (a rebuild: {plan.rebuild})"
    return plan
