"""Find and fix drift between SQL (the truth) and the vector index.

    report = check_index(store)                 # CheckReport(orphans=[...], missing=[...])
    report = check_index(store, repair=True)    # delete orphans, embed and add missing vectors
    report = check_index(store, rebuild=True)   # a new, empty index, then every chunk from SQL
    protege knowledge check [--repair] [--rebuild]   # the same from the command line

Orphans are vectors whose chunk row does not exist (a crash between adding vectors and the SQL
commit, or between a commit and deleting a replaced/deleted version's vectors). They are never
served (retrieval checks hits against SQL), but they cost space and may crowd out results.
Missing vectors are chunk rows without a vector (an index folder lost or restored from an older
backup). Repair takes the store's write lock; with a Chroma server shared by several processes,
run it while no upload is in flight (the API server repairs at start), or run it twice.

A broken index (Chroma cannot list its vectors: a wedged compaction log, a corrupt folder) is
rebuilt by `repair`: SQL holds every chunk's text and access, so the index is reset and every
chunk embedded again (`report.rebuilt`). `rebuild=True` does that whatever the index's state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select

from knowledge.acl import vector_metadata
from knowledge.errors import IndexUnavailableError
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
    broken: str | None = None  # why the index could not be read, if it could not
    rebuilt: bool = False  # the index was reset and every chunk added again from SQL

    @property
    def consistent(self) -> bool:
        return self.broken is None and not self.orphans and not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "repaired": self.repaired,
            "n_chunks": self.n_chunks,
            "n_vectors": self.n_vectors,
            "orphans": self.orphans,
            "missing": self.missing,
            "broken": self.broken,
            "rebuilt": self.rebuilt,
        }


def _chunk_ids(store: Any) -> set[str]:
    with store.session() as session:
        query = select(Chunk.id).join(Document).where(Document.status == CURRENT)
        return set(session.exec(query))


def check_index(
    store: Any, *, repair: bool = False, rebuild: bool = False, fix_broken: bool = True
) -> CheckReport:
    """Compare chunk rows with vector ids; with `repair`, make the index match SQL.

    An index that cannot be read is reported (`broken`); `repair` then rebuilds it from SQL,
    unless `fix_broken=False` (the server's start: resetting an index is the operator's call, a
    Chroma server that is merely unreachable must not be wiped).
    """
    with store.write_lock:  # no upload of this process is half-way while we compare
        wanted = _chunk_ids(store)
        try:
            if rebuild:
                raise IndexUnavailableError("a rebuild was asked for")
            present = set(store.index.ids())
        except IndexUnavailableError as exc:
            report = CheckReport(n_chunks=len(wanted), broken=str(exc), missing=sorted(wanted))
            if rebuild or (repair and fix_broken):
                _rebuild(store, report)
            return report
        report = CheckReport(
            n_chunks=len(wanted),
            n_vectors=len(present),
            orphans=sorted(present - wanted),
            missing=sorted(wanted - present),
        )
        if not repair or report.consistent:
            return report
        index = store.index
        if report.orphans:
            # Re-read SQL just before deleting: a row committed meanwhile (by another process)
            # makes its vectors wanted again.
            stray = sorted(set(report.orphans) - _chunk_ids(store))
            index.delete(stray)
        _add_from_sql(store, report.missing)
        report.repaired = True
    if report.orphans or report.missing:
        log.warning("vector index repaired: %d orphan vectors removed, %d missing added",
                    len(report.orphans), len(report.missing))  # fmt: skip
    return report


def _rebuild(store: Any, report: CheckReport) -> None:
    """Reset the index (opening a fresh one if it cannot even be opened), add every chunk."""
    from knowledge.chroma_index import ChromaIndex, open_index

    index = store._index
    if isinstance(index, ChromaIndex):
        index.reset()
    elif index is None:  # it failed to open: move the folder aside through a bare client
        settings = store.settings
        if settings.knowledge.chroma_url is None:
            ChromaIndex.reset_folder(settings.chroma_dir)
        store._index = open_index(settings)
    else:  # another VectorIndex: drop what it holds
        index.delete(index.ids())
    _add_from_sql(store, report.missing)
    report.repaired = report.rebuilt = True
    log.warning("vector index rebuilt from SQL: %d chunks embedded again", len(report.missing))


def _add_from_sql(store: Any, chunk_ids: list[str]) -> None:
    index = store.index
    for start in range(0, len(chunk_ids), _BATCH):
        ids = chunk_ids[start : start + _BATCH]
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
