"""Deleting documents: every version forgotten, rows kept as scrubbed tombstones.

result = delete_versions(store, doc_id, deleted_by="ana")   # store.delete_document(...)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, delete, select

from knowledge.catalog import adapters_by_document
from knowledge.errors import NotFoundError
from knowledge.faults import pause_point
from knowledge.tables import CURRENT, DELETED, SUPERSEDED, Chunk, Document, DocumentText, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeleteResult:
    document_ids: list[int]  # every version removed
    chunks_removed: int
    adapters: list[str]  # adapter versions trained on one of them: they still carry its content


def delete_versions(store: Any, doc_id: int, deleted_by: str | None = None) -> DeleteResult:
    """Forget a document: every version's text, chunks and vectors (any version's id works).

    Rows stay as scrubbed tombstones (no name, title, hash or text) so ids are never reused.
    Adapters already trained on it still carry it: they are listed in the result.
    """
    with store.write_lock:
        with store.session() as session:
            target = session.get(Document, doc_id)
            if target is None or target.status == DELETED:
                raise NotFoundError(f"no document with id {doc_id}")
            live = col(Document.status).in_([CURRENT, SUPERSEDED])
            versions = list(
                session.exec(select(Document).where(Document.name == target.name, live))
            )
            ids = [d.id for d in versions if d.id is not None]
            chunk_ids = list(session.exec(select(Chunk.id).where(col(Chunk.document_id).in_(ids))))
            session.exec(delete(Chunk).where(col(Chunk.document_id).in_(ids)))
            session.exec(delete(DocumentText).where(col(DocumentText.document_id).in_(ids)))
            now = utcnow()
            for version in versions:
                version.status, version.deleted_at = DELETED, now
                version.deleted_by = deleted_by
                version.name = version.title = version.sha256 = ""
                version.n_chunks = 0
                session.add(version)
            session.commit()
        pause_point("after_delete_commit")
        store.forget_vectors(store.index, chunk_ids)
    trained = adapters_by_document(store.engine)
    adapters = sorted({a for i in ids for a in trained.get(i, [])})
    log.info("deleted document %s (%d versions, %d chunks)", doc_id, len(ids), len(chunk_ids))
    return DeleteResult(sorted(ids), len(chunk_ids), adapters)
