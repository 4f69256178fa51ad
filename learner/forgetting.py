"""Forgetting a document: out of retrieval at once, out of the weights at the next cycle.

    result = forget_document(settings, 7, actor="dpo")   # `protege forget 7 --yes`, DELETE /v1/documents/7
    result.tainted, result.served                          # adapters that carried it; what is served now

1. The knowledge store deletes every version (text, chunks, vectors): retrieval drops it at once.
2. The QA pairs and eval items written from it are deleted (learner/qa_pairs.py,
   learner/evals/written.py).
3. Every adapter whose lineage (`documents_json`) holds one of those versions is marked
   `tainted`: never served, promoted or rolled back to again (learner/registry.py).
4. If the served adapter is tainted, its newest clean ancestor (or the base model) becomes the
   served one in the same transaction (Deployment action "forget"); hot-swap follows the registry.
5. The next nightly cycle sees `rebuild_reason` and rebuilds from the base model: a fresh LoRA
   trained on all remaining eligible documents (replay), not only the new ones. Until a rebuilt
   adapter is promoted, every cycle rebuilds.

Tests: .venv/bin/python -m pytest tests/test_forgetting.py -q
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner.evals.answer_cache import forget_base_answers
from learner.evals.written import forget_items
from learner.qa_pairs import forget_pairs
from learner.registry import BASE, FORGET, Registry

log = logging.getLogger("protege.forgetting")


@dataclass(frozen=True)
class ForgetResult:
    document_ids: list[int]  # every version deleted
    chunks_removed: int
    tainted: list[str]  # adapters trained on it: never served again
    served_before: str
    served: str  # served now: a clean ancestor or "base" if the served one was tainted

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: what was removed and what happened to serving."""
        text = f"versions {self.document_ids}, {self.chunks_removed} chunks"
        if not self.tainted:
            return text + "; no adapter was trained on it"
        text += f"; tainted adapters: {', '.join(self.tainted)}"
        if self.served != self.served_before:
            text += f"; serving moved from {self.served_before} to {self.served}"
        return text + "; the next cycle rebuilds from the base model without it"


def forget_document(
    settings: Settings, doc_id: int, actor: str | None = None, store: KnowledgeStore | None = None
) -> ForgetResult:
    """Delete document `doc_id` (any version's id) and taint every adapter trained on it.

    Raises NotFoundError for an unknown or already deleted id (nothing changes then).
    """
    store = store or KnowledgeStore(settings)
    registry = Registry(settings)
    served_before = registry.served_version()
    deleted = store.delete_document(doc_id, deleted_by=actor)
    forget_pairs(settings, deleted.document_ids)  # the QA pairs written from it go too
    forget_items(registry.engine, deleted.document_ids)  # and its eval items
    forget_base_answers(settings)  # and the base's answers that may quote it
    served = served_before
    if deleted.adapters:
        reason = f"trained on forgotten document {doc_id} (versions {deleted.document_ids})"
        served = registry.taint(deleted.adapters, reason, actor=f"{FORGET}:{actor or '-'}")
    log.warning(
        "forgot document %s (versions %s); tainted %s; serving %s -> %s",
        doc_id, deleted.document_ids, deleted.adapters or "none", served_before, served,
    )  # fmt: skip
    return ForgetResult(
        deleted.document_ids, deleted.chunks_removed, deleted.adapters, served_before, served
    )


def rebuild_reason(registry: Registry) -> str | None:
    """Why the next cycle must start from the base model (fresh LoRA, all documents), or None.

    Due when forgetting moved serving off a tainted adapter and no cycle has promoted since, or
    when the served adapter's lineage holds a deleted document (however it was deleted).
    """
    last = registry.last_deployment()
    if last is not None and last.action == FORGET:
        return (
            f"a forgotten document tainted the served adapter ({last.actor} moved serving to "
            f"{last.version} at {last.created_at:%Y-%m-%d %H:%M}); rebuilding from the base model"
        )
    served = last.version if last is not None else BASE
    if served != BASE and (gone := registry.forgotten_documents(served)):
        return f"served adapter {served} was trained on deleted documents {gone}"
    return None
