"""The knowledge store: documents in SQL (the truth) plus their chunk vectors in Chroma.

    store = KnowledgeStore(settings, count_tokens=lambda s: len(tok.encode(s)))
    store.ingest_bytes("handbook.pdf", data, uploaded_by="ana")      # IngestResult
    store.ingest_paths([Path("docs/")])                              # folders recurse
    store.retrieve("How many vacation days?", groups=["hr"])         # [RetrievedChunk, ...]
    store.delete_document(3)                                         # every version, forgotten

An ingest is all-or-nothing: rows are written in one SQL transaction, vectors are added before it
commits, and whichever step fails undoes the other. Uploading new bytes under a name that exists
makes a new version: in the same transaction the old version's chunk rows go and its row becomes
"superseded", so retrieval (which checks every hit against SQL) switches versions at the commit;
the old vectors are deleted right after. A crash leaves at worst vectors without rows, invisible
at query time and removed by `check_index(repair=True)` (`protege knowledge check --repair`),
which the API server also runs at start.

One store may be shared by threads. With embedded Chroma only one process should write the folder
(the app); others (the nightly trainer) read SQL only, and Chroma is not opened until needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from knowledge.acl import vector_metadata
from knowledge.chunking import ChunkPiece, chunk_document, count_words
from knowledge.db import open_database
from knowledge.deletion import DeleteResult, delete_versions
from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import (
    BadInputError,
    ConflictError,
    IndexUnavailableError,
    NotFoundError,
)
from knowledge.faults import pause_point
from knowledge.formats import Limits
from knowledge.ingest import (
    IngestReport,
    Progress,
    UploadPlan,
    check_same_access,
    embed_in_batches,
    ingest_files,
    no_progress,
    plan_upload,
)
from knowledge.parse_worker import parse_isolated
from knowledge.retrieval import RetrievedChunk, search_by_vector
from knowledge.settings import Settings
from knowledge.tables import CURRENT, DELETED, SUPERSEDED, Chunk, Document, DocumentText, utcnow
from knowledge.vector_index import VectorIndex

__all__ = ["DeleteResult", "IngestReport", "IngestResult", "KnowledgeStore", "RetrievedChunk"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    document: Document
    created: bool  # False: these exact bytes are already a current document; `document` is it
    replaced: Document | None = None  # the version this upload superseded, if any


class KnowledgeStore:
    """Documents, versions, chunks and their vectors. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        count_tokens: Callable[[str], int] | None = None,
        *,
        index: VectorIndex | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.count_tokens = count_tokens or count_words
        self.engine = open_database(settings.db_url)
        self._index = index
        self._embedder = embedder
        self._open_lock = threading.Lock()
        # One writer at a time in this process: keeps dedupe/versioning simple. Other processes
        # are covered by the partial unique indexes on current name and sha256 (see _insert).
        self.write_lock = threading.Lock()
        knobs = settings.knowledge
        self.limits = Limits(
            knobs.max_unpacked_bytes, knobs.max_text_chars, knobs.max_pages, knobs.max_nesting_depth
        )

    # -- components, opened on first use -------------------------------------------------------

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            with self._open_lock:
                if self._index is None:
                    from knowledge.chroma_index import open_index

                    self._index = open_index(self.settings)
        return self._index

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def session(self) -> Session:
        """A SQL session on the store's database (objects stay usable after it closes)."""
        return Session(self.engine, expire_on_commit=False)

    # -- ingest ----------------------------------------------------------------------------------

    def ingest_bytes(
        self,
        name: str,
        data: bytes,
        *,
        uploaded_by: str | None = None,
        visibility: str | None = None,
        groups: Sequence[str] | str | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Parse, chunk, embed and store one file (all or nothing); see the module docstring.

        The same bytes as a current document give that document back (`created=False`), unless
        other access settings are asked for (AccessConflictError, 409); new bytes under a current
        document's name become its next version. Access: `visibility` "company" or "groups" (with
        `groups`); given neither, a new version keeps the access of the version it replaces
        (widening access must be explicit) and a new document is company. `progress(stage, done,
        total)` hears about each stage (ingest jobs show it). Parsing runs in a child process
        within `knowledge.parse_timeout_seconds` (knowledge/parse_worker.py).
        """
        plan = plan_upload(self, name, data, visibility=visibility, groups=groups)
        if plan.existing is not None:  # cheap exit before parsing, chunking and embedding
            return IngestResult(plan.existing, created=False)
        report = progress or no_progress
        knobs = self.settings.knowledge
        report("parsing", 0, 1)
        parsed = parse_isolated(plan.name, data, self.limits, knobs.parse_timeout_seconds)
        report("chunking", 0, 1)
        pieces = chunk_document(
            parsed.text, parsed.spans, self.count_tokens, knobs.chunk_tokens, knobs.chunk_overlap
        )
        if not pieces:
            raise BadInputError(f"{parsed.name!r} has no text")
        # slow: outside the write lock
        vectors = embed_in_batches(self.embedder, [p.text for p in pieces], report)
        document = Document(
            name=parsed.name,
            title=parsed.title,
            sha256=plan.sha256,
            size_bytes=len(data),
            media_type=parsed.media_type,
            visibility=plan.visibility,
            groups=",".join(plan.groups),
            uploaded_by=uploaded_by,
            n_chunks=len(pieces),
        )
        index = self.index
        report("writing", 0, len(pieces))
        with self.write_lock:
            return self._insert(index, document, parsed.text, pieces, vectors, plan)

    def _insert(
        self,
        index: VectorIndex,
        document: Document,
        text: str,
        pieces: list[ChunkPiece],
        vectors: list[list[float]],
        plan: UploadPlan,
    ) -> IngestResult:
        new_ids: list[str] = []
        old_ids: list[str] = []
        previous: Document | None = None
        try:
            with self.session() as session:  # leaving it without commit rolls back
                current = select(Document).where(Document.status == CURRENT)
                if existing := session.exec(
                    current.where(Document.sha256 == document.sha256)
                ).first():  # the same bytes landed meanwhile
                    check_same_access(existing, plan)
                    return IngestResult(existing, created=False)
                previous = session.exec(current.where(Document.name == document.name)).first()
                if previous is not None:
                    document.version = previous.version + 1
                    if plan.inherit_access:
                        document.visibility, document.groups = previous.visibility, previous.groups
                    old_ids = list(
                        session.exec(select(Chunk.id).where(Chunk.document_id == previous.id))
                    )
                    session.exec(delete(Chunk).where(col(Chunk.document_id) == previous.id))
                    previous.status, previous.superseded_at = SUPERSEDED, utcnow()
                    session.add(previous)
                    session.flush()  # the old row stops being current before the new one lands
                session.add(document)
                session.flush()  # assigns document.id, which the chunk ids are made of
                assert document.id is not None
                chunks = [
                    Chunk(id=f"{document.id}-{i}", document_id=document.id, position=i,
                          text=p.text, n_tokens=self.count_tokens(p.text), heading=p.heading,
                          page_start=p.page_start, page_end=p.page_end)
                    for i, p in enumerate(pieces)
                ]  # fmt: skip
                session.add_all(chunks)
                session.add(DocumentText(document_id=document.id, text=text))
                session.flush()  # surface SQL errors before touching the index
                pause_point("before_vectors")
                new_ids = [c.id for c in chunks]
                metadatas = [vector_metadata(document, c) for c in chunks]
                index.add(new_ids, vectors, [c.text for c in chunks], metadatas)
                pause_point("after_vectors")  # a crash here leaves orphan vectors only
                connection = session.connection()
                try:
                    session.commit()
                except BaseException:
                    # After a failed COMMIT SQLAlchemy considers the transaction over, but the
                    # driver's may still be open (SQLite busy) and would commit with the next
                    # user of the pooled connection: discard that connection instead.
                    connection.invalidate()
                    raise
        except BaseException as exc:
            # Undo the vectors too (some batches may have landed before an add failed).
            self.forget_vectors(index, new_ids)
            if isinstance(exc, IntegrityError):
                if existing := self.current_by_sha(document.sha256):
                    check_same_access(existing, plan)
                    return IngestResult(existing, created=False)  # another process won the race
                raise ConflictError(
                    f"{document.name!r} was changed by another upload at the same moment; retry"
                ) from exc
            raise
        pause_point("after_commit")  # a crash here leaves the old version's vectors (orphans)
        self.forget_vectors(index, old_ids)
        log.info("ingested %s v%d as document %s (%d chunks)", document.name, document.version,
                 document.id, len(new_ids))  # fmt: skip
        return IngestResult(document, created=True, replaced=previous)

    @staticmethod
    def forget_vectors(index: VectorIndex, ids: Sequence[str]) -> None:
        if not ids:
            return
        try:
            index.delete(ids)
        except Exception:  # the first error matters more; leftovers are ignored at query time
            log.exception(
                "could not remove %d vectors; `protege knowledge check --repair` will", len(ids)
            )

    def ingest_files(
        self,
        paths: Sequence[Path],
        *,
        uploaded_by: str | None = None,
        visibility: str | None = None,
        groups: Sequence[str] | str | None = None,
        progress: bool = True,
        keep_going: bool = True,
    ) -> IngestReport:
        """Ingest files, and supported files under folders (recursively), one atomic ingest each.

        `keep_going`: a bad file is reported in `failures` and the rest still go in; otherwise the
        first bad file raises its error (with the path) and the files before it stay.
        """
        return ingest_files(
            self, paths, uploaded_by=uploaded_by, visibility=visibility, groups=groups,
            progress=progress, keep_going=keep_going,
        )  # fmt: skip

    def ingest_paths(self, paths: Sequence[Path], **kwargs: object) -> list[IngestResult]:
        """`ingest_files` that stops at the first bad file (raising it); returns the results."""
        return self.ingest_files(paths, keep_going=False, **kwargs).results  # type: ignore[arg-type]

    # -- retrieval -------------------------------------------------------------------------------

    def retrieve(
        self, query: str, k: int | None = None, groups: Sequence[str] | None = None
    ) -> list[RetrievedChunk]:
        """The `k` chunks closest to `query` that the caller may see, best first.

        Company documents are visible to all; "groups" documents only to callers sharing a group.
        `groups=None` (or empty) sees company documents only.
        """
        k = self.settings.knowledge.top_k if k is None else k
        if k <= 0:
            raise BadInputError(f"k must be positive, got {k}")
        if not query.strip() or self.index.count() == 0:
            return []
        [vector] = self.embedder.embed([query])
        return self.retrieve_by_vector(vector, k, groups)

    def retrieve_by_vector(
        self, vector: Sequence[float], k: int, groups: Sequence[str] | None = None
    ) -> list[RetrievedChunk]:
        """`retrieve` with the query already embedded (benches, callers with their own cache)."""
        return search_by_vector(self, vector, k, groups)

    # -- reading ---------------------------------------------------------------------------------

    def current_by_sha(self, sha: str) -> Document | None:
        with self.session() as session:
            query = select(Document).where(Document.sha256 == sha, Document.status == CURRENT)
            return session.exec(query).first()

    def list_documents(self) -> list[Document]:
        """Current versions, oldest first (superseded versions: `knowledge.catalog`)."""
        with self.session() as session:
            query = select(Document).where(Document.status == CURRENT)
            return list(session.exec(query.order_by(col(Document.id))))

    def get_document(self, doc_id: int) -> Document:
        """Any version by id (current or superseded); deleted ones are not found."""
        with self.session() as session:
            document = session.get(Document, doc_id)
        if document is None or document.status == DELETED:
            raise NotFoundError(f"no document with id {doc_id}")
        return document

    def chunks_for(self, document_ids: Sequence[int]) -> list[Chunk]:
        """The documents' chunks, ordered by document id, then position."""
        if not document_ids:
            return []
        with self.session() as session:
            query = (
                select(Chunk)
                .where(col(Chunk.document_id).in_(list(document_ids)))
                .order_by(col(Chunk.document_id), col(Chunk.position))
            )
            return list(session.exec(query))

    def document_text(self, doc_id: int) -> str:
        """The full parsed text (exact, unlike joined chunks, which overlap). Old versions too."""
        with self.session() as session:
            row = session.get(DocumentText, doc_id)
        if row is None:
            self.get_document(doc_id)  # NotFoundError for an unknown or deleted id
            raise NotFoundError(f"document {doc_id} has no stored text")
        return row.text

    def training_eligible(self, exclude_ids: Collection[int] = ()) -> list[Document]:
        """Current versions the nightly cycle may train on, not in `exclude_ids`, oldest first.

        `knowledge.train_on` decides: "company_only" (default) keeps group-restricted documents
        out, since training bakes a document into weights every user reaches; "all" includes
        them; "none" trains on nothing.
        """
        rule = self.settings.knowledge.train_on
        if rule == "none":
            return []
        with self.session() as session:
            query = select(Document).where(Document.status == CURRENT)
            if rule == "company_only":
                query = query.where(Document.visibility == "company")
            if exclude_ids:
                query = query.where(col(Document.id).not_in(list(exclude_ids)))
            return list(session.exec(query.order_by(col(Document.id))))

    # -- deleting and repair ---------------------------------------------------------------------

    def delete_document(self, doc_id: int, *, deleted_by: str | None = None) -> DeleteResult:
        """Forget a document: every version's text, chunks and vectors (any version's id works).

        Rows stay as scrubbed tombstones (no name, title, hash or text) so ids are never reused.
        Adapters already trained on it still carry it: they are listed in the result.
        """
        return delete_versions(self, doc_id, deleted_by)

    def sync_index(self) -> tuple[int, int]:
        """Make the index match SQL; returns (vectors removed, vectors added). See check_index.

        A broken index is not rebuilt here: IndexUnavailableError says what to run.
        """
        from knowledge.consistency import check_index

        report = check_index(self, repair=True, fix_broken=False)
        if report.broken is not None:
            raise IndexUnavailableError(report.broken)
        return len(report.orphans), len(report.missing)
