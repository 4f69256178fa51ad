"""Find and fix drift between SQL (the truth) and the vector index.

    report = check_index(store)                 # CheckReport(orphans=[...], missing=[...])
    report = check_index(store, repair=True)    # delete orphans, embed and add missing vectors
    protege knowledge check [--repair]          # the same from the command line

Orphans are vectors whose chunk row does not exist (a crash between adding vectors and the SQL
commit, or between a commit and deleting a replaced/deleted version's vectors). They are never
served (retrieval checks hits against SQL), but they cost space and may crowd out results.
Missing vectors are chunk rows without a vector (an index folder lost or restored from an older
backup). Repair takes the store's write lock; with a Chroma server shared by several processes,
run it while no upload is in flight (the API server repairs at start), or run it twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select

from knowledge.acl import vector_metadata
from knowledge.tables import CURRENT, Chunk, Document

log = logging.getLogger(__name__)
_BATCH = 256  # chunks embedded and added per round while repairing


@dataclass
class CheckReport:
    n_chunks: int = 0  # chunk rows of current documents in SQL
    n_vectors: int = 0  # vectors in the index before any repair
    orphans: list[str] = field(default_factory=list)  # vector ids without a chunk row
    missing: list[str] = field(default_factory=list)  # chunk ids without a vector
    repaired: bool = False

    @property
    def consistent(self) -> bool:
        return not self.orphans and not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "repaired": self.repaired,
            "n_chunks": self.n_chunks,
            "n_vectors": self.n_vectors,
            "orphans": self.orphans,
            "missing": self.missing,
        }


def _chunk_ids(store: Any) -> set[str]:
    with store.session() as session:
        query = select(Chunk.id).join(Document).where(Document.status == CURRENT)
        return set(session.exec(query))


def check_index(store: Any, *, repair: bool = False) -> CheckReport:
    """Compare chunk rows with vector ids; with `repair`, make the index match SQL."""
    index = store.index
    with store.write_lock:  # no upload of this process is half-way while we compare
        wanted = _chunk_ids(store)
        present = set(index.ids())
        report = CheckReport(
            n_chunks=len(wanted),
            n_vectors=len(present),
            orphans=sorted(present - wanted),
            missing=sorted(wanted - present),
        )
        if not repair or report.consistent:
            return report
        if report.orphans:
            # Re-read SQL just before deleting: a row committed meanwhile (by another process)
            # makes its vectors wanted again.
            stray = sorted(set(report.orphans) - _chunk_ids(store))
            index.delete(stray)
        for start in range(0, len(report.missing), _BATCH):
            ids = report.missing[start : start + _BATCH]
            with store.session() as session:
                query = select(Chunk, Document).join(Document).where(col(Chunk.id).in_(ids))
                rows = list(session.exec(query.where(Document.status == CURRENT)))
            if not rows:
                continue
            vectors = store.embedder.embed([chunk.text for chunk, _ in rows])
            index.add(
                [chunk.id for chunk, _ in rows],
                vectors,
                [chunk.text for chunk, _ in rows],
                [vector_metadata(document, chunk) for chunk, document in rows],
            )
        report.repaired = True
    if report.orphans or report.missing:
        log.warning("vector index repaired: %d orphan vectors removed, %d missing added",
                    len(report.orphans), len(report.missing))  # fmt: skip
    return report
