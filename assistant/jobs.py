"""Large uploads ingested in the background: one worker thread, state in SQL (issue 11).

    jobs = IngestJobs(store); jobs.recover(); jobs.start()      # in the app's lifespan
    job = jobs.submit(plan, data, uploaded_by="ana")            # POST /v1/documents -> 202
    job_json(jobs.get(job.id))                                  # GET /v1/jobs/{id}

An upload over `knowledge.job_threshold_bytes` is checked as any upload (size, access, name, same
bytes: knowledge/ingest.py) and then answered 202 at once with `status_url`; the worker parses,
chunks, embeds and stores it, writing its stage and progress (`done`/`total` chunks embedded) to
the job's row a few times a second. The uploaded bytes wait in `<home>/jobs/<id>.upload`
(owner-only) and are removed when the job ends.

A crash (kill -9, power) while a job is queued or running leaves its row `queued`/`running`:
`recover()` at the next start of the same server (host and home: replicas on one database keep
their own jobs) marks it `failed` ("interrupted ...; upload it again") and removes
its file. The ingest itself is one SQL transaction with the vectors added before the commit, so
an interrupted job leaves nothing visible (stray vectors are removed by the start-up repair).
At most `knowledge.max_queued_jobs` jobs wait or run; more get 429 with Retry-After.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sqlmodel import col, func, select

from knowledge.errors import NotFoundError, ProtegeError, RateLimitedError
from knowledge.ingest import UploadPlan
from knowledge.tables import FAILED, QUEUED, RUNNING, SUCCEEDED, IngestJob, utcnow

log = logging.getLogger(__name__)
_WRITE_EVERY = 0.5  # seconds between progress writes of one job
# share of the whole job done when each stage starts (embedding takes most of the time)
_STAGE_START = {QUEUED: 0.0, "parsing": 0.02, "chunking": 0.05, "embedding": 0.15, "writing": 0.9}
_STOP = -1


class IngestJobs:
    """See the module docstring."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.settings = store.settings
        self.folder: Path = self.settings.jobs_dir
        self.owner = f"{socket.gethostname()}:{self.settings.home}"
        self._queue: queue.Queue[int] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._submit_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def recover(self) -> int:
        """Fail the jobs a previous process left unfinished, remove their files; how many."""
        with self.store.session() as session:
            unfinished = col(IngestJob.status).in_([QUEUED, RUNNING])
            rows = list(
                session.exec(select(IngestJob).where(unfinished, IngestJob.owner == self.owner))
            )
            for row in rows:
                row.status, row.finished_at, row.updated_at = FAILED, utcnow(), utcnow()
                row.error = (
                    f"interrupted: the server stopped while this job was {row.stage}; nothing of "
                    "it was stored, upload the file again"
                )
                session.add(row)
            session.commit()
        if self.folder.exists():
            for leftover in self.folder.glob("*.upload"):
                leftover.unlink(missing_ok=True)
        if rows:
            log.warning("%d ingest jobs interrupted by a restart marked failed", len(rows))
        return len(rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="protege-ingest-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop taking jobs. A job mid-ingest is left to the daemon thread (see recover)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # -- API -------------------------------------------------------------------------------------
    def submit(self, plan: UploadPlan, data: bytes, *, uploaded_by: str | None) -> IngestJob:
        """Queue an ingest of `data` (already checked by `plan_upload`); 429 past the cap."""
        cap = self.settings.knowledge.max_queued_jobs
        with self._submit_lock, self.store.session() as session:
            waiting = session.exec(
                select(func.count()).where(col(IngestJob.status).in_([QUEUED, RUNNING]))
            ).one()
            if waiting >= cap:
                raise RateLimitedError(
                    f"{waiting} ingest jobs are queued or running; at most {cap} "
                    "(knowledge.max_queued_jobs): retry later",
                    retry_after=10,
                )
            job = IngestJob(
                name=plan.name,
                size_bytes=len(data),
                sha256=plan.sha256,
                visibility=None if plan.inherit_access else plan.visibility,
                groups=",".join(plan.groups),
                uploaded_by=uploaded_by,
                owner=self.owner,
            )
            session.add(job)
            session.commit()
            session.refresh(job)
        assert job.id is not None
        try:
            self._write_upload(job.id, data)
        except OSError as exc:
            self._finish(job.id, FAILED, error=f"could not keep the upload: {exc}")
            raise ProtegeError(f"could not keep the upload for ingesting: {exc}") from exc
        self._queue.put(job.id)
        return job

    def get(self, job_id: int) -> IngestJob:
        with self.store.session() as session:
            job = session.get(IngestJob, job_id)
        if job is None:
            raise NotFoundError(f"no ingest job with id {job_id}")
        return job

    # -- the worker ------------------------------------------------------------------------------
    def _path(self, job_id: int) -> Path:
        return self.folder / f"{job_id}.upload"

    def _write_upload(self, job_id: int, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path(job_id), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def _run(self) -> None:
        while (job_id := self._queue.get()) != _STOP:
            try:
                self._run_one(job_id)
            except Exception:  # the worker must outlive any one job
                log.exception("ingest job %s failed unexpectedly", job_id)
                self._finish(job_id, FAILED, error="internal error; see the server log")

    def _run_one(self, job_id: int) -> None:
        job = self.get(job_id)
        path = self._path(job_id)
        self._update(job_id, status=RUNNING, stage="parsing")
        last = [0.0, ""]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if stage != last[1] or now - last[0] >= _WRITE_EVERY or done == total:
                last[:] = [now, stage]
                self._update(job_id, stage=stage, done=done, total=total)

        try:
            data = path.read_bytes()
            result = self.store.ingest_bytes(
                job.name, data, uploaded_by=job.uploaded_by, visibility=job.visibility,
                groups=job.groups or None, progress=progress,
            )  # fmt: skip
        except ProtegeError as exc:
            self._finish(job_id, FAILED, error=str(exc))
            return
        except OSError as exc:
            self._finish(job_id, FAILED, error=f"the upload's file is gone: {exc}")
            return
        finally:
            path.unlink(missing_ok=True)
        self._finish(
            job_id, SUCCEEDED, document_id=result.document.id, created_document=result.created,
            replaced_id=result.replaced.id if result.replaced else None,
        )  # fmt: skip
        log.info("ingest job %s done: document %s", job_id, result.document.id)

    def _update(self, job_id: int, **fields: Any) -> None:
        with self.store.session() as session:
            job = session.get(IngestJob, job_id)
            if job is None:
                return
            for key, value in fields.items():
                setattr(job, key, value)
            job.updated_at = utcnow()
            session.add(job)
            session.commit()

    def _finish(self, job_id: int, status: str, **fields: Any) -> None:
        self._update(job_id, status=status, stage="done", finished_at=utcnow(), **fields)


def job_json(job: IngestJob) -> dict[str, Any]:
    """The job as the API shows it, with `progress` from 0 to 1 (an estimate by stage)."""
    if job.status == SUCCEEDED:
        progress = 1.0
    elif job.status == FAILED:
        progress = 0.0
    else:
        start = _STAGE_START.get(job.stage, 0.0)
        following = sorted(v for v in _STAGE_START.values() if v > start)
        end = following[0] if following else 1.0
        share = job.done / job.total if job.total else 0.0
        progress = round(start + (end - start) * share, 3)
    return {
        "id": job.id,
        "object": "ingest.job",
        "status": job.status,
        "name": job.name,
        "size_bytes": job.size_bytes,
        "stage": job.stage,
        "done": job.done,
        "total": job.total,
        "progress": progress,
        "document_id": job.document_id,
        "created": job.created_document,
        "replaced_id": job.replaced_id,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "status_url": f"/v1/jobs/{job.id}",
    }
