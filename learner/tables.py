"""SQL tables owned by `learner`: the adapter registry, its deployment history, training runs."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from knowledge.tables import utcnow

ADAPTER_STATUSES = ("candidate", "promoted", "rejected", "retired", "tainted")


class Adapter(SQLModel, table=True):
    version: str = Field(primary_key=True)  # "v0001", "v0002", ...
    parent_version: str | None = None  # adapter this one continued from (None: fresh from the base)
    base_model: str
    path: str  # complete folder (renamed into place only once fully written)
    sha256: str
    status: str = Field(default="candidate", index=True)
    config_json: str = "{}"  # resolved settings used to train it
    documents_json: str = "[]"  # ids of every document in its lineage (cumulative)
    metrics_json: str = "{}"
    run_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Deployment(SQLModel, table=True):
    """Who/what made which adapter version the served one, when. The newest row is served."""

    id: int | None = Field(default=None, primary_key=True)
    version: str  # adapter version, or "base" for no adapter
    action: str  # "promote" | "rollback" | "forget" (moved off a tainted adapter)
    actor: str = "system"
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    """One nightly cycle (or `protege train --now`)."""

    id: int | None = Field(default=None, primary_key=True)
    trigger: str = "manual"  # "manual" | "schedule"
    status: str = Field(default="running", index=True)  # running | succeeded | skipped | failed
    stage: str = "select"
    message: str = ""
    adapter_version: str | None = None
    metrics_json: str = "{}"
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Lease(SQLModel, table=True):
    """A named lease: at most one holder at a time across processes and hosts (learner/lease.py).

    A holder keeps it alive by moving `expires_at` forward (heartbeat); a holder that dies stops
    doing so, and once `expires_at` has passed anyone may take the lease over.
    """

    name: str = Field(primary_key=True)  # "nightly-cycle"
    holder: str  # "<host>:<pid>:<random>"
    heartbeat_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class EvalItem(SQLModel, table=True):
    """A held-out closed-book question about one document version (learner/evals/written.py).

    The teacher writes them from the document's chunks when no QA file is configured; an admin
    may add, edit or delete them. Nothing trains on them: QA pairs and OPD prompts that match one
    (after normalisation) are left out.
    """

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(index=True)  # the document version it asks about
    set_name: str  # the gate's set: the documents whose items one cycle wrote share one
    question: str
    answer: str  # short; a reply is right when it contains it (learner.evals.qa.qa_correct)
    origin: str = "teacher"  # "teacher" | "admin"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
