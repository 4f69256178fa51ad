"""The knowledge store: documents in SQL (the truth) plus their chunk vectors in Chroma.

    store = KnowledgeStore(settings, count_tokens=lambda s: len(tok.encode(s)))
    store.ingest_bytes("handbook.md", data, uploaded_by="ana")       # IngestResult
    store.ingest_paths([Path("docs/")])                              # folders recurse
    store.retrieve("How many vacation days?", groups=["hr"])         # [RetrievedChunk, ...]

An ingest is all-or-nothing: rows are written in one SQL transaction, vectors are added before it
commits, and whichever step fails undoes the other. Vectors left behind by a crash are ignored at
query time (every hit is checked against SQL, ACL included) and removed by `sync_index()`.

One store may be shared by threads. Only one process should write a Chroma folder (the app);
others (the nightly trainer) read SQL only, and Chroma is not opened until retrieval needs it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select
from tqdm import tqdm

from knowledge.chunking import chunk_text, count_words
from knowledge.db import open_database
from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import BadInputError, NotFoundError, ProtegeError
from knowledge.parsing import collect_files, parse_document
from knowledge.settings import Settings
from knowledge.tables import Chunk, Document, DocumentText
from knowledge.vector_index import VectorIndex

log = logging.getLogger(__name__)

VISIBILITIES = ("company", "groups")
_GROUP_NAME = re.compile(r"^[\w.@-]{1,64}$")  # also a safe Chroma metadata key suffix
_GROUP_KEY = "group:"


@dataclass(frozen=True)
class IngestResult:
    document: Document
    created: bool  # False: these exact bytes were already stored; `document` is that one


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    document_id: int
    title: str
    text: str
    score: float  # cosine similarity of query and chunk, higher is closer
    name: str = ""  # the document's file name
    position: int = 0  # the chunk's place in its document


def _clean_groups(groups: Sequence[str] | str, *, strict: bool) -> list[str]:
    if isinstance(groups, str):  # a bare string would otherwise iterate characters
        groups = [groups]
    names = sorted({g.strip() for g in groups if g and g.strip()})
    bad = [g for g in names if not _GROUP_NAME.match(g)]
    if bad and strict:
        raise BadInputError(f"invalid group names {bad}: use letters, digits, '_', '.', '@', '-'")
    # Dropping a caller's malformed group can only hide documents, never reveal them.
    return [g for g in names if g not in bad]


def _visible(document: Document, caller_groups: Collection[str]) -> bool:
    if document.visibility == "company":
        return True
    return bool(set(filter(None, document.groups.split(","))) & set(caller_groups))


def _vector_metadata(document: Document, position: int) -> dict[str, str | int | bool]:
    """What Chroma filters on: visibility plus one boolean key per group (`group:hr: True`)."""
    groups = filter(None, document.groups.split(","))
    return {
        "document_id": document.id or 0,
        "position": position,
        "visibility": document.visibility,
        **{f"{_GROUP_KEY}{g}": True for g in groups},
    }


def _acl_where(caller_groups: Sequence[str]) -> dict[str, Any]:
    company = {"visibility": "company"}
    if not caller_groups:
        return company
    return {"$or": [company, *({f"{_GROUP_KEY}{g}": True} for g in caller_groups)]}


class KnowledgeStore:
    """Documents, chunks and their vectors. See the module docstring."""

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
        # One writer at a time in this process: keeps dedupe-then-insert simple. Other processes
        # are covered by the unique sha256 index (see _insert).
        self._write_lock = threading.Lock()

    # -- components, opened on first use -------------------------------------------------------

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            with self._open_lock:
                if self._index is None:
                    from knowledge.chroma_index import ChromaIndex

                    self._index = ChromaIndex(
                        self.settings.chroma_dir, self.settings.knowledge.collection
                    )
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
        visibility: str = "company",
        groups: Sequence[str] = (),
    ) -> IngestResult:
        """Parse, chunk, embed and store one file (all or nothing).

        The same bytes twice give one document: the first upload's name and access are kept.
        """
        limit = self.settings.knowledge.max_upload_bytes
        if len(data) > limit:
            raise BadInputError(f"{name!r} is {len(data):,} bytes; the upload limit is {limit:,}")
        if visibility not in VISIBILITIES:
            raise BadInputError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
        group_names = _clean_groups(groups, strict=True)
        if visibility == "groups" and not group_names:
            raise BadInputError("visibility 'groups' needs at least one group")
        if visibility == "company" and group_names:
            # Refuse rather than drop: a forgotten visibility would publish a private document.
            raise BadInputError("groups given but visibility is 'company'; use 'groups'")
        parsed = parse_document(name, data)
        sha = hashlib.sha256(data).hexdigest()
        if existing := self._by_sha(sha):  # cheap exit before chunking and embedding
            return IngestResult(existing, created=False)

        knobs = self.settings.knowledge
        texts = chunk_text(parsed.text, self.count_tokens, knobs.chunk_tokens, knobs.chunk_overlap)
        if not texts:
            raise BadInputError(f"{parsed.name!r} has no text")
        vectors = self.embedder.embed(texts)  # slow part, done outside the write lock
        document = Document(
            name=parsed.name,
            title=parsed.title,
            sha256=sha,
            size_bytes=len(data),
            media_type=parsed.media_type,
            visibility=visibility,
            groups=",".join(group_names),
            uploaded_by=uploaded_by,
            n_chunks=len(texts),
        )
        index = self.index
        with self._write_lock:
            return self._insert(index, document, parsed.text, texts, vectors)

    def _insert(
        self,
        index: VectorIndex,
        document: Document,
        text: str,
        texts: list[str],
        vectors: list[list[float]],
    ) -> IngestResult:
        ids: list[str] = []
        try:
            with self.session() as session:  # leaving it without commit rolls back
                found = session.exec(select(Document).where(Document.sha256 == document.sha256))
                if existing := found.first():
                    return IngestResult(existing, created=False)
                session.add(document)
                session.flush()  # assigns document.id, which the chunk ids are made of
                assert document.id is not None
                chunks = [
                    Chunk(id=f"{document.id}-{i}", document_id=document.id, position=i, text=t,
                          n_tokens=self.count_tokens(t))
                    for i, t in enumerate(texts)
                ]  # fmt: skip
                session.add_all(chunks)
                session.add(DocumentText(document_id=document.id, text=text))
                session.flush()  # surface SQL errors before touching the index
                ids = [c.id for c in chunks]
                metadatas = [_vector_metadata(document, c.position) for c in chunks]
                index.add(ids, vectors, texts, metadatas)
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
            self._forget_vectors(index, ids)
            if isinstance(exc, IntegrityError) and (existing := self._by_sha(document.sha256)):
                return IngestResult(existing, created=False)  # another process won the race
            raise
        log.info("ingested %s as document %s (%d chunks)", document.name, document.id, len(ids))
        return IngestResult(document, created=True)

    @staticmethod
    def _forget_vectors(index: VectorIndex, ids: Sequence[str]) -> None:
        if not ids:
            return
        try:
            index.delete(ids)
        except Exception:  # the first error matters more; leftovers are ignored at query time
            log.exception("could not remove %d vectors after a failed write", len(ids))

    def ingest_paths(
        self,
        paths: Sequence[Path],
        *,
        uploaded_by: str | None = None,
        visibility: str = "company",
        groups: Sequence[str] = (),
        progress: bool = True,
    ) -> list[IngestResult]:
        """Ingest files, and .txt/.md files under folders (recursively), one atomic ingest each.

        Stops at the first bad file, raising its error with the path; files before it stay.
        """
        files = collect_files(paths)
        limit = self.settings.knowledge.max_upload_bytes
        results = []
        for path in tqdm(files, desc="ingest", unit="file", disable=not progress):
            try:
                if path.stat().st_size > limit:  # don't read a huge file just to refuse it
                    raise BadInputError(f"{path.stat().st_size:,} bytes; the limit is {limit:,}")
                data = path.read_bytes()
                result = self.ingest_bytes(
                    path.name, data, uploaded_by=uploaded_by, visibility=visibility, groups=groups
                )
            except OSError as exc:
                raise BadInputError(f"{path}: cannot read: {exc}") from exc
            except ProtegeError as exc:
                raise type(exc)(f"{path}: {exc}") from exc
            results.append(result)
        return results

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
        if not query.strip():
            return []
        caller_groups = _clean_groups(groups or (), strict=False)
        index = self.index
        if index.count() == 0:
            return []
        [vector] = self.embedder.embed([query])
        hits = index.query(vector, k, where=_acl_where(caller_groups))
        if not hits:
            return []
        with self.session() as session:
            query = select(Chunk, Document).join(Document)
            rows = session.exec(query.where(col(Chunk.id).in_([h.id for h in hits])))
            found = {chunk.id: (chunk, document) for chunk, document in rows}
        results = []
        for hit in hits:
            # SQL is the truth: skip vectors of deleted documents and re-check the ACL.
            chunk, document = found.get(hit.id, (None, None))
            if chunk is None or document is None or not _visible(document, caller_groups):
                continue
            results.append(
                RetrievedChunk(chunk.id, chunk.document_id, document.title, chunk.text,
                               hit.score, name=document.name, position=chunk.position)
            )  # fmt: skip
        return results

    # -- reading ---------------------------------------------------------------------------------

    def _by_sha(self, sha: str) -> Document | None:
        with self.session() as session:
            return session.exec(select(Document).where(Document.sha256 == sha)).first()

    def list_documents(self) -> list[Document]:
        with self.session() as session:
            return list(session.exec(select(Document).order_by(col(Document.id))))

    def get_document(self, doc_id: int) -> Document:
        with self.session() as session:
            document = session.get(Document, doc_id)
        if document is None:
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
        """The full parsed text (exact, unlike joined chunks, which overlap)."""
        with self.session() as session:
            row = session.get(DocumentText, doc_id)
        if row is None:
            self.get_document(doc_id)  # NotFoundError for an unknown id
            raise NotFoundError(f"document {doc_id} has no stored text")
        return row.text

    def training_eligible(self, exclude_ids: Collection[int] = ()) -> list[Document]:
        """Company-visible documents not in `exclude_ids`, oldest first.

        Only company documents: training bakes a document into weights every user reaches.
        """
        with self.session() as session:
            query = select(Document).where(Document.visibility == "company")
            if exclude_ids:
                query = query.where(col(Document.id).not_in(list(exclude_ids)))
            return list(session.exec(query.order_by(col(Document.id))))

    # -- deleting and repair ---------------------------------------------------------------------

    def delete_document(self, doc_id: int) -> None:
        """Remove a document's rows, then its vectors (leftovers are invisible; see module doc)."""
        with self._write_lock:
            with self.session() as session:
                if session.get(Document, doc_id) is None:
                    raise NotFoundError(f"no document with id {doc_id}")
                ids = list(session.exec(select(Chunk.id).where(Chunk.document_id == doc_id)))
                session.exec(delete(Chunk).where(col(Chunk.document_id) == doc_id))
                session.exec(delete(DocumentText).where(col(DocumentText.document_id) == doc_id))
                session.exec(delete(Document).where(col(Document.id) == doc_id))
                session.commit()
            self._forget_vectors(self.index, ids)
        log.info("deleted document %s (%d chunks)", doc_id, len(ids))

    def sync_index(self) -> tuple[int, int]:
        """Make the index match SQL: drop stray vectors, embed chunks that lack one.

        For the process that owns the Chroma folder (e.g. at app start, or after the folder was
        lost). Returns (vectors removed, vectors added).
        """
        with self._write_lock:
            index = self.index
            with self.session() as session:
                rows = list(session.exec(select(Chunk, Document).join(Document)))
            wanted = {chunk.id: (chunk, document) for chunk, document in rows}
            present = set(index.ids())
            stray = sorted(present - wanted.keys())
            missing = [wanted[i] for i in sorted(wanted.keys() - present)]
            self._forget_vectors(index, stray)
            if missing:
                vectors = self.embedder.embed([chunk.text for chunk, _ in missing])
                metadatas = [_vector_metadata(d, c.position) for c, d in missing]
                index.add(
                    [c.id for c, _ in missing], vectors, [c.text for c, _ in missing], metadatas
                )
        return len(stray), len(missing)
