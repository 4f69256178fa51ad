"""SQL tables owned by `knowledge`: documents, chunks, conversations (exchanges), feedback,
per-user training opt-outs, ingest jobs.

One SQLModel metadata and one database for the whole app; `learner` owns its own tables.
Schema changes ship with an Alembic migration in `knowledge/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)  # sqlmodel stores aware datetimes (UTC)


CURRENT = "current"  # the version retrieval and training use
SUPERSEDED = "superseded"  # replaced by a newer upload under the same name; text kept, no chunks
DELETED = "deleted"  # a tombstone: content, name and hash scrubbed, id never reused
_IS_CURRENT = text("status = 'current'")


class Document(SQLModel, table=True):
    """One version of an uploaded file. Versions of a file share its `name`.

    The id names a version: adapters record the ids they were trained on, and chunk ids are made
    of it. Deleted documents stay as scrubbed tombstones so ids are never reused (SQLite would
    otherwise hand the highest id out again, and an adapter's lineage would then claim a new file).
    """

    __table_args__ = (
        # At most one current version per name, and the same bytes are one current document.
        Index("ux_document_current_name", "name", unique=True,
              sqlite_where=_IS_CURRENT, postgresql_where=_IS_CURRENT),
        Index("ux_document_current_sha256", "sha256", unique=True,
              sqlite_where=_IS_CURRENT, postgresql_where=_IS_CURRENT),
    )  # fmt: skip

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)  # file name as uploaded (sanitised)
    title: str
    sha256: str = Field(index=True)  # of the raw bytes
    size_bytes: int
    media_type: str = "text/plain"
    visibility: str = "company"  # "company" or "groups"
    groups: str = ""  # comma-separated group names when visibility == "groups"
    uploaded_by: str | None = None
    n_chunks: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    version: int = 1  # 1 for the first upload of a name, then 2, 3, ...
    status: str = Field(default=CURRENT, index=True)
    superseded_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None


class Chunk(SQLModel, table=True):
    id: str = Field(primary_key=True)  # "<document id>-<position>": also the vector id in Chroma
    document_id: int = Field(foreign_key="document.id", index=True)
    position: int
    text: str
    n_tokens: int
    heading: str | None = None  # heading path at the chunk's start ("Policy > Leave"), citations
    page_start: int | None = None  # 1-based PDF pages the chunk spans
    page_end: int | None = None


class DocumentText(SQLModel, table=True):
    """A document's full parsed text, kept apart from `Document` so listing documents stays light.

    Chunks overlap, so joining them would repeat text; training on documents needs the exact text.
    """

    document_id: int = Field(foreign_key="document.id", primary_key=True)
    text: str


class Exchange(SQLModel, table=True):
    """One chat request and its answer, with the adapter version that produced it."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    user: str | None = Field(default=None, index=True)
    messages_json: str  # the request's messages
    answer: str
    adapter_version: str = Field(index=True)  # "base" or an adapter version such as "v0003"
    chunk_ids_json: str = "[]"  # retrieved chunks given as context
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The client went away before the answer's end (a streamed answer closed early): the row
    # still records the whole answer the model produced.
    aborted: bool = False


class Feedback(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    exchange_id: int = Field(foreign_key="exchange.id", index=True)
    rating: int  # +1 / -1
    comment: str = ""
    user: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class TrainingOptOut(SQLModel, table=True):
    """A user who asked that their conversations never be used for training (knowledge/optout.py).

    A row means opted out; opting back in deletes it.
    """

    user: str = Field(primary_key=True)
    opted_out_at: datetime = Field(default_factory=utcnow)


QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


class IngestJob(SQLModel, table=True):
    """An upload ingested in the background (large files: `knowledge.job_threshold_bytes`).

    The uploaded bytes wait in `<home>/jobs/<id>.upload` (owner-only) until the job ends. A job
    still queued or running when its server died is marked failed at the next start
    (assistant/jobs.py); the ingest itself is all or nothing, so nothing is half-written.
    """

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default=QUEUED, index=True)  # queued | running | succeeded | failed
    name: str  # the stored name (sanitised)
    size_bytes: int
    sha256: str
    visibility: str | None = None  # as asked; None: a new version keeps the previous access
    groups: str = ""
    uploaded_by: str | None = None
    # which server runs it ("host:home"): a restart fails its own unfinished jobs, not a replica's
    owner: str = ""
    stage: str = QUEUED  # parsing, chunking, embedding, writing, done
    done: int = 0  # units of `stage` finished (chunks embedded, ...)
    total: int = 0
    document_id: int | None = None  # when succeeded
    created_document: bool | None = None  # False: these bytes were stored already
    replaced_id: int | None = None
    error: str | None = None  # when failed: what the upload would have answered
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
