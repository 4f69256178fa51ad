"""The adapter registry: versioned adapter folders with checksums, and which one is served.

Folders: `<home>/adapters/<version>/` holding the peft adapter files and `meta.json`. A folder is
written as `<version>.tmp`, fsynced, checksummed and renamed into place, so the registry never
points at a partial folder. Promotion and rollback are single DB transactions.

An adapter trained on a document that was later forgotten is `tainted` (learner/forgetting.py):
it is never served, promoted or rolled back to again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session, col, select

from knowledge.db import open_database
from knowledge.errors import AdapterIntegrityError, NotFoundError, TaintedAdapterError
from knowledge.faults import pause_point
from knowledge.settings import Settings
from knowledge.tables import DELETED, Document, utcnow
from learner.tables import Adapter, Deployment

BASE = "base"  # the served "version" when no adapter is promoted
FORGET = "forget"  # Deployment.action when forgetting moved serving off a tainted adapter
META = "meta.json"


def folder_sha256(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (meta.json excluded: it holds the sum)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry:
    """reg = Registry(settings); reg.served_version(); reg.promote("v0002")"""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = open_database(settings.db_url)
        self.root = settings.adapters_dir
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)  # owner-only (issue 11)

    # ---- writing -------------------------------------------------------------------------
    def next_version(self) -> str:
        with Session(self.engine) as session:
            versions = session.exec(select(Adapter.version)).all()
        on_disk = [
            p.name.removesuffix(".tmp") for p in self.root.iterdir() if p.name.startswith("v")
        ]
        numbers = [int(v[1:]) for v in [*versions, *on_disk] if v[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(
        self,
        version: str,
        save: Callable[[Path], None],
        *,
        parent_version: str | None,
        base_model: str,
        config: dict,
        documents: list[int],
        metrics: dict,
        run_id: int | None = None,
    ) -> Adapter:
        """Write an adapter with `save(folder)`, checksum it, rename into place, add its row."""
        final = self.root / version
        tmp = self.root / f"{version}.tmp"
        if final.exists():
            raise AdapterIntegrityError(f"adapter folder {final} already exists")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, mode=0o700)
        save(tmp)
        sha = folder_sha256(tmp)
        meta = {
            "version": version,
            "parent_version": parent_version,
            "base_model": base_model,
            "sha256": sha,
            "documents": documents,
            "metrics": metrics,
            "config": config,
            "created_at": utcnow().isoformat(),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
        _fsync_tree(tmp)
        pause_point("register:written")  # crash tests: a complete .tmp folder, not renamed
        tmp.rename(final)
        pause_point("register:renamed")  # crash tests: a folder in place without its row
        row = Adapter(
            version=version,
            parent_version=parent_version,
            base_model=base_model,
            path=str(final),
            sha256=sha,
            config_json=json.dumps(config),
            documents_json=json.dumps(documents),
            metrics_json=json.dumps(metrics),
            run_id=run_id,
        )
        with Session(self.engine) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
        return row

    # ---- reading -------------------------------------------------------------------------
    def get(self, version: str) -> Adapter:
        with Session(self.engine) as session:
            row = session.get(Adapter, version)
        if row is None:
            raise NotFoundError(f"no adapter {version!r}")
        return row

    def list(self) -> list[Adapter]:
        with Session(self.engine) as session:
            return list(session.exec(select(Adapter).order_by(Adapter.version)).all())

    def last_deployment(self) -> Deployment | None:
        with Session(self.engine) as session:
            return session.exec(select(Deployment).order_by(Deployment.id.desc()).limit(1)).first()

    def served_version(self) -> str:
        last = self.last_deployment()
        return last.version if last else BASE

    def served_documents(self) -> list[int]:
        version = self.served_version()
        return [] if version == BASE else json.loads(self.get(version).documents_json)

    def documents_by_night(self, version: str) -> list[list[int]]:
        """The document ids each adapter of `version`'s lineage added, oldest first: what each
        promoted night learned ([] for the base)."""
        groups: list[list[int]] = []
        child = None if version == BASE else self.get(version)
        while child is not None:
            parent = self.get(child.parent_version) if child.parent_version else None
            had = set(json.loads(parent.documents_json)) if parent else set()
            groups.append([d for d in json.loads(child.documents_json) if d not in had])
            child = parent
        return groups[::-1]

    def forgotten_documents(self, version: str) -> list[int]:
        """Document ids in `version`'s lineage that have since been deleted (forgotten)."""
        with Session(self.engine) as session:
            return _forgotten(session, self.get(version))

    def verify(self, version: str) -> Path:
        """The adapter's folder, after checking it is complete and matches its checksum."""
        row = self.get(version)
        folder = Path(row.path)
        if not (folder / META).exists():
            raise AdapterIntegrityError(f"adapter {version}: folder {folder} missing or partial")
        meta = json.loads((folder / META).read_text())
        actual = folder_sha256(folder)
        if actual != row.sha256 or meta.get("sha256") != row.sha256:
            raise AdapterIntegrityError(
                f"adapter {version}: checksum mismatch (registry {row.sha256[:12]}, folder {actual[:12]})"
            )
        if row.status == "tainted":
            why = json.loads(row.metrics_json).get("tainted", {}).get("reason", "")
            raise TaintedAdapterError(f"adapter {version} is tainted ({why}): never served again")
        if row.status == "rejected":
            raise AdapterIntegrityError(f"adapter {version} is {row.status} and may not be served")
        return folder

    # ---- status changes ------------------------------------------------------------------
    def set_metrics(self, version: str, metrics: dict) -> None:
        with Session(self.engine) as session:
            row = session.get(Adapter, version)
            row.metrics_json = json.dumps(metrics)
            session.add(row)
            session.commit()

    def reject(self, version: str) -> None:
        self._set_status(version, "rejected")

    def _set_status(self, version: str, status: str) -> None:
        with Session(self.engine) as session:
            row = session.get(Adapter, version)
            if row is None:
                raise NotFoundError(f"no adapter {version!r}")
            row.status = status
            session.add(row)
            session.commit()

    def promote(self, version: str, actor: str = "system", action: str = "promote") -> None:
        """Make `version` (or "base") the served one, in one transaction.

        Refuses (TaintedAdapterError) an adapter that is tainted or whose lineage holds a
        forgotten document: a cycle that was training while a document was forgotten must not
        bring it back. The row is locked, so a concurrent `taint` either comes first (refused
        here) or sees this promotion (and moves serving off it).
        """
        if version != BASE:
            self.verify(version)
        with Session(self.engine) as session:
            if version != BASE:
                target = session.get(Adapter, version, with_for_update=True)
                gone = _forgotten(session, target)
                if target.status == "tainted" or gone:
                    session.rollback()
                    if gone:
                        self.taint([version], f"trained on forgotten documents {gone}")
                    self.verify(version)  # raises TaintedAdapterError with the reason
            for row in session.exec(select(Adapter).where(Adapter.status == "promoted")).all():
                row.status = "retired"
                session.add(row)
            if version != BASE:
                target.status = "promoted"
                session.add(target)
            session.add(Deployment(version=version, action=action, actor=actor))
            session.commit()

    def rollback(self, actor: str = "system") -> str:
        """Serve the version that was served before the current one; returns it."""
        with Session(self.engine) as session:
            history = session.exec(select(Deployment).order_by(Deployment.id.desc())).all()
        current = history[0].version if history else BASE
        tainted = {row.version for row in self.list() if row.status == "tainted"}
        previous = next(
            (d.version for d in history[1:] if d.version not in {current, *tainted}), BASE
        )
        self.promote(previous, actor=actor, action="rollback")
        return previous

    def taint(self, versions: list[str], reason: str, actor: str = "system") -> str:
        """Mark `versions` tainted for good; returns the version served afterwards.

        If the served adapter is among them, its newest clean ancestor (or "base") becomes the
        served one in the same transaction (a Deployment row with action "forget"), so serving
        converges off it at the next poll or reload.
        """
        doomed = set(versions)
        current = self.served_version()
        replacement = self._clean_ancestor(current, doomed) if current in doomed else BASE
        with Session(self.engine) as session:
            for version in sorted(doomed):
                row = session.get(Adapter, version, with_for_update=True)
                if row is None:
                    raise NotFoundError(f"no adapter {version!r}")
                if row.status != "tainted":
                    metrics = json.loads(row.metrics_json)
                    metrics["tainted"] = {"reason": reason, "at": utcnow().isoformat()}
                    row.status, row.metrics_json = "tainted", json.dumps(metrics)
                    session.add(row)
            last = session.exec(select(Deployment).order_by(Deployment.id.desc()).limit(1)).first()
            served = last.version if last else BASE
            if served in doomed:
                if served != current:  # promoted meanwhile: the base model is always clean
                    replacement = BASE
                if replacement != BASE:
                    clean = session.get(Adapter, replacement)
                    clean.status = "promoted"
                    session.add(clean)
                session.add(Deployment(version=replacement, action=FORGET, actor=actor))
                served = replacement
            session.commit()
        return served

    def _clean_ancestor(self, version: str, doomed: set[str]) -> str:
        """The newest ancestor of `version` (itself unless doomed) that may be served, or base."""
        while version != BASE:
            row = self.get(version)
            if version not in doomed:
                try:
                    self.verify(version)
                    return version
                except AdapterIntegrityError:  # tainted, rejected or damaged: look further up
                    pass
            version = row.parent_version or BASE
        return BASE


def _forgotten(session: Session, adapter: Adapter) -> list[int]:
    ids = [i for i in json.loads(adapter.documents_json) if isinstance(i, int)]
    if not ids:
        return []
    query = select(Document.id).where(col(Document.id).in_(ids), Document.status == DELETED)
    return sorted(i for i in session.exec(query) if i is not None)
