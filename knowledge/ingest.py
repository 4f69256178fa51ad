"""The checks an upload passes before any work, and progress reporting while it is ingested.

    plan = plan_upload(store, "handbook.md", data, visibility="groups", groups="hr")
    if plan.existing: ...                     # these bytes are stored already (same access)
    vectors = embed_in_batches(store.embedder, texts, progress)

`plan_upload` is cheap (no parsing): size, access settings, file name, and whether the same bytes
are stored already. The API runs it before answering an upload (even one that becomes a job), so
an upload that can only fail is refused at once and nothing is written. The same bytes with other
access settings than stored are refused (AccessConflictError, 409) rather than silently keeping
the old access: access changes only through a deliberate upload of new bytes (a new version).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from knowledge.acl import check_access
from knowledge.errors import AccessConflictError, BadInputError, ProtegeError, TooLargeError
from knowledge.parsing import collect_files, sanitize_name
from knowledge.tables import Document

# (stage, done, total): stages "parsing", "chunking", "embedding", "writing"
Progress = Callable[[str, int, int], None]
EMBED_BATCH = 256


def no_progress(stage: str, done: int, total: int) -> None:
    """The default Progress: report nothing."""


@dataclass(frozen=True)
class UploadPlan:
    name: str  # the stored name (knowledge.parsing.sanitize_name)
    sha256: str
    size_bytes: int
    visibility: str
    groups: list[str]
    inherit_access: bool  # no access settings given: a new version keeps the previous access
    existing: Document | None = None  # these bytes are already a current document


def plan_upload(
    store: Any,
    name: str,
    data: bytes,
    *,
    visibility: str | None = None,
    groups: Sequence[str] | str | None = None,
) -> UploadPlan:
    """Every check that needs no parsing; raises the upload's error, or returns its plan."""
    knobs = store.settings.knowledge
    if len(data) > knobs.max_upload_bytes:
        raise TooLargeError(
            f"{name[:80]!r} is {len(data):,} bytes; the upload limit is {knobs.max_upload_bytes:,}"
        )
    inherit = visibility is None and not groups
    visibility = visibility or ("groups" if groups else "company")
    names = check_access(
        visibility, groups, max_groups=knobs.max_groups, max_chars=knobs.max_group_chars
    )
    stored = sanitize_name(name)
    if not data:
        raise BadInputError(f"{stored!r} is empty")
    sha = hashlib.sha256(data).hexdigest()
    plan = UploadPlan(stored, sha, len(data), visibility, names, inherit)
    existing = store.current_by_sha(sha)
    if existing is not None:
        check_same_access(existing, plan)
        return UploadPlan(stored, sha, len(data), visibility, names, inherit, existing)
    return plan


def check_same_access(existing: Document, plan: UploadPlan) -> None:
    """Refuse the same bytes with other explicit access settings than stored (409)."""
    if plan.inherit_access:
        return
    if (existing.visibility, existing.groups) == (plan.visibility, ",".join(plan.groups)):
        return
    stored = "company" if existing.visibility == "company" else f"groups {existing.groups}"
    asked = "company" if plan.visibility == "company" else f"groups {','.join(plan.groups)}"
    raise AccessConflictError(
        f"these bytes are already stored as document {existing.id} ({existing.name!r}, access "
        f"{stored}); this upload asks for {asked}. Access is not changed by uploading the same "
        "file again: delete the document and upload it with the new access"
    )


def embed_in_batches(embedder: Any, texts: list[str], progress: Progress) -> list[list[float]]:
    """Embeddings of `texts`, reporting ("embedding", done, total) after each batch."""
    vectors: list[list[float]] = []
    progress("embedding", 0, len(texts))
    for start in range(0, len(texts), EMBED_BATCH):
        vectors += embedder.embed(texts[start : start + EMBED_BATCH])
        progress("embedding", len(vectors), len(texts))
    return vectors


@dataclass(frozen=True)
class IngestReport:
    results: list[Any] = field(default_factory=list)  # knowledge.store.IngestResult
    failures: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)


def ingest_files(
    store: Any,
    paths: Sequence[Path],
    *,
    uploaded_by: str | None = None,
    visibility: str | None = None,
    groups: Sequence[str] | str | None = None,
    progress: bool = True,
    keep_going: bool = True,
) -> IngestReport:
    """`KnowledgeStore.ingest_files`: one atomic ingest per file, a progress bar per file."""
    files = collect_files(paths)
    limit = store.settings.knowledge.max_upload_bytes
    report = IngestReport()
    bar = tqdm(files, desc="ingest", unit="file", disable=not progress)
    for path in bar:
        shown = path.name[-40:]
        bar.set_postfix_str(shown, refresh=False)

        def stage(what: str, done: int, total: int, shown: str = shown) -> None:
            # a big file's embedding takes minutes: say how far it is
            if total > 1:
                bar.set_postfix_str(f"{shown}: {what} {done:,}/{total:,}")

        try:
            try:
                if (size := path.stat().st_size) > limit:  # don't read a huge file to refuse it
                    raise TooLargeError(f"{size:,} bytes; the upload limit is {limit:,}")
                data = path.read_bytes()
            except OSError as exc:
                raise BadInputError(f"cannot read: {exc}") from exc
            result = store.ingest_bytes(
                path.name, data, uploaded_by=uploaded_by, visibility=visibility, groups=groups,
                progress=stage,
            )  # fmt: skip
        except ProtegeError as exc:
            if not keep_going:
                raise type(exc)(f"{path}: {exc}") from exc
            report.failures.append((path, str(exc)))
            continue
        report.results.append(result)
    return report
