"""What is stored, for people: documents with their versions and the adapters trained on each.

    for info in catalog(store):                 # current documents, each with all its versions
        print(info.name, info.current.version, [v.adapters for v in info.versions])
    describe(store, 7).as_dict()                # the document version 7 belongs to

Which adapters were trained on a version comes from the learner's `adapter` table (its
`documents_json` lists every document id in the adapter's lineage). It is read with plain SQL so
`knowledge` never imports `learner`; no table yet means no adapters.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from knowledge.acl import document_groups
from knowledge.errors import NotFoundError
from knowledge.tables import CURRENT, DELETED, SUPERSEDED, Document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    id: int
    version: int
    status: str  # "current" or "superseded"
    title: str
    media_type: str
    size_bytes: int
    n_chunks: int
    visibility: str
    groups: list[str]
    uploaded_by: str | None
    created_at: datetime
    superseded_at: datetime | None
    sha256: str
    adapters: list[str] = field(default_factory=list)  # adapter versions trained on it


@dataclass(frozen=True)
class DocumentInfo:
    name: str
    current: VersionInfo
    versions: list[VersionInfo]  # newest first, the current one included

    @property
    def id(self) -> int:
        return self.current.id

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the current version's fields at the top, every version under `versions`."""
        return {
            **_version_json(self.current),
            "name": self.name,
            "n_versions": len(self.versions),
            "versions": [_version_json(v) for v in self.versions],
        }


def _version_json(version: VersionInfo) -> dict[str, Any]:
    out = asdict(version)
    for key in ("created_at", "superseded_at"):
        out[key] = out[key].isoformat() if out[key] else None
    return out


def adapters_by_document(engine: Engine) -> dict[int, list[str]]:
    """document id -> adapter versions whose lineage includes it (any status)."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT version, documents_json FROM adapter ORDER BY version")
            ).all()
    except DBAPIError:  # no learner tables in this database (yet)
        log.debug("no adapter table; no adapters to report", exc_info=True)
        return {}
    found: dict[int, list[str]] = {}
    for version, documents_json in rows:
        try:
            ids = json.loads(documents_json or "[]")
        except ValueError:
            log.warning("adapter %s has unreadable documents_json", version)
            continue
        for doc_id in ids:
            if isinstance(doc_id, int):
                found.setdefault(doc_id, []).append(version)
    return found


def _info(row: Document, adapters: dict[int, list[str]]) -> VersionInfo:
    assert row.id is not None
    return VersionInfo(
        id=row.id, version=row.version, status=row.status, title=row.title,
        media_type=row.media_type, size_bytes=row.size_bytes, n_chunks=row.n_chunks,
        visibility=row.visibility, groups=document_groups(row), uploaded_by=row.uploaded_by,
        created_at=row.created_at, superseded_at=row.superseded_at, sha256=row.sha256,
        adapters=adapters.get(row.id, []),
    )  # fmt: skip


def catalog(store: Any) -> list[DocumentInfo]:
    """Every current document with all its versions, by name."""
    with store.session() as session:
        live = col(Document.status).in_([CURRENT, SUPERSEDED])
        rows = list(session.exec(select(Document).where(live).order_by(col(Document.id))))
    adapters = adapters_by_document(store.engine)
    by_name: dict[str, list[Document]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    out = []
    for name, versions in by_name.items():
        current = [v for v in versions if v.status == CURRENT]
        if not current:  # only possible mid-way through another process's write
            continue
        infos = [_info(v, adapters) for v in sorted(versions, key=lambda v: -v.version)]
        out.append(DocumentInfo(name, _info(current[0], adapters), infos))
    return sorted(out, key=lambda info: info.current.id)


def describe(store: Any, doc_id: int) -> DocumentInfo:
    """The document (all versions) that version `doc_id` belongs to."""
    with store.session() as session:
        row = session.get(Document, doc_id)
        if row is None or row.status == DELETED:
            raise NotFoundError(f"no document with id {doc_id}")
        live = col(Document.status).in_([CURRENT, SUPERSEDED])
        versions = list(session.exec(select(Document).where(Document.name == row.name, live)))
    adapters = adapters_by_document(store.engine)
    infos = [_info(v, adapters) for v in sorted(versions, key=lambda v: -v.version)]
    current = next((v for v in infos if v.status == CURRENT), infos[0])
    return DocumentInfo(row.name, current, infos)
