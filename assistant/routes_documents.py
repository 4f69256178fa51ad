"""Document and search endpoints (an APIRouter included by `assistant.app.create_app`).

    H="Authorization: Bearer $KEY"
    curl -H "$H" -F file=@handbook.pdf -F visibility=groups -F groups=hr,finance \
         localhost:8321/v1/documents                        # admin: upload
    curl -H "$H" localhost:8321/v1/documents                # documents the key may see, versions
    curl -H "$H" localhost:8321/v1/documents/7              # one document (any version's id)
    curl -H "$H" -X DELETE localhost:8321/v1/documents/7    # admin: forget every version
    curl -H "$H" localhost:8321/v1/jobs/3                   # admin: a large upload's progress
    curl -H "$H" localhost:8321/v1/search -H 'content-type: application/json' \
         -d '{"query": "vacation days", "k": 3}'

Who is asking comes from the API key (assistant/auth.py), never from the request: the uploader and
deleter recorded are the key's user, and search sees what the key's groups may see (a `groups`
field in the body is refused with 422, so no client believes it still narrows or widens access).
Uploads and deletes are admin-only. Listing and reading show a `user` key the documents whose
current version it may see (company ones and those of its groups; others answer 404), and of
those only the versions it may see: every version keeps its own access (a superseded `groups`
version stays hidden from outsiders after a `company` version replaced it). Admins see every
document's metadata (names, not content).

Uploads: 201 new document or version, 200 the same bytes already stored (same access), 409 the
same bytes with other access, 202 a large upload (`knowledge.job_threshold_bytes`) queued as a
job with `status_url` (assistant/jobs.py). The answer's `name`/`stored_name` is the stored name,
`uploaded_name` the name as sent (knowledge/parsing.py says what is refused and why).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from assistant.auth import Principal, current_principal, may_see, require_admin
from assistant.jobs import job_json
from knowledge.catalog import DocumentInfo, catalog, describe
from knowledge.errors import AdapterIntegrityError, NotFoundError, TooLargeError
from knowledge.ingest import plan_upload
from knowledge.store import KnowledgeStore
from learner.forgetting import forget_document

router = APIRouter()
MAX_ID = 2**63 - 1  # SQL's BIGINT: a larger id is a 422, not an OverflowError deep in the driver
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _store(request: Request) -> KnowledgeStore:
    return request.app.state.store


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4_000)
    k: int | None = Field(default=None, ge=1, le=100)
    # No `groups`: the caller's groups are the API key's (extra="forbid" refuses the old field).


def _seen_by(principal: Principal, info: DocumentInfo) -> DocumentInfo | None:
    """The document as `principal` may see it: None, or with only the versions it may see."""
    if not may_see(principal, info.current.visibility, info.current.groups):
        return None
    versions = [v for v in info.versions if may_see(principal, v.visibility, v.groups)]
    return DocumentInfo(info.name, info.current, versions)


@router.post("/v1/documents", status_code=201)
async def upload_document(
    request: Request,
    file: UploadFile = File(...),
    visibility: str | None = Form(None),
    groups: str = Form(""),
    admin: Principal = Depends(require_admin),
) -> JSONResponse:
    """Multipart upload: 201 new document or version, 200 these bytes were already stored, 202
    queued as a job (large files). Every check that needs no parsing runs first (422/413/409/400
    before anything is written).

    `visibility` "company" | "groups" with `groups` "a,b"; neither: a new version keeps the old
    version's access, a new document is company-wide.
    """
    store = _store(request)
    limit = store.settings.knowledge.max_upload_bytes
    data = await file.read(limit + 1)  # never more than one byte past the limit
    if len(data) > limit:
        raise TooLargeError(
            f"{(file.filename or '')[:80]!r} is larger than the upload limit of {limit:,} bytes"
        )
    uploaded = file.filename or ""
    plan = await run_in_threadpool(
        lambda: plan_upload(store, uploaded, data, visibility=visibility, groups=groups)
    )
    if plan.existing is None and len(data) > store.settings.knowledge.job_threshold_bytes:
        jobs = request.app.state.jobs
        job = await run_in_threadpool(lambda: jobs.submit(plan, data, uploaded_by=admin.user))
        body = {**job_json(job), "uploaded_name": uploaded, "stored_name": plan.name}
        return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})

    def ingest() -> dict[str, Any]:
        result = store.ingest_bytes(
            uploaded, data, uploaded_by=admin.user, visibility=visibility, groups=groups
        )
        assert result.document.id is not None
        body = describe(store, result.document.id).as_dict()
        body["created"] = result.created
        body["replaced_id"] = result.replaced.id if result.replaced else None
        body["uploaded_name"], body["stored_name"] = uploaded, body["name"]
        return body

    body = await run_in_threadpool(ingest)
    return JSONResponse(body, status_code=201 if body["created"] else 200)


@router.get("/v1/jobs/{job_id}")
async def ingest_job(
    request: Request, job_id: RowId, admin: Principal = Depends(require_admin)
) -> dict[str, Any]:
    """A large upload's job: status, stage, progress (0-1), the document once stored."""
    return job_json(await run_in_threadpool(request.app.state.jobs.get, job_id))


@router.get("/v1/documents")
async def list_documents(
    request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    infos = await run_in_threadpool(catalog, _store(request))
    seen = (_seen_by(principal, info) for info in infos)
    return {"object": "list", "data": [i.as_dict() for i in seen if i is not None]}


@router.get("/v1/documents/{doc_id}")
async def get_document(
    request: Request, doc_id: RowId, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    """The document version `doc_id` belongs to, with the versions the caller may see."""
    info = await run_in_threadpool(describe, _store(request), doc_id)
    seen = _seen_by(principal, info)
    # a version the caller may not see answers as a missing id does: nothing leaks
    if seen is None or all(v.id != doc_id for v in seen.versions):
        raise NotFoundError(f"no document with id {doc_id}")
    return seen.as_dict()


@router.delete("/v1/documents/{doc_id}")
async def delete_document(
    request: Request, doc_id: RowId, admin: Principal = Depends(require_admin)
) -> dict[str, Any]:
    """Forget every version (learner/forgetting.py): out of search at once, and every adapter
    trained on it `tainted`. `served`: what this server serves from now on (it swaps before
    answering; `serving_error` says why it could not, and its poller keeps trying)."""
    store, switcher = _store(request), request.app.state.switcher
    result = await run_in_threadpool(
        lambda: forget_document(store.settings, doc_id, admin.user, store=store)
    )
    body: dict[str, Any] = {
        "deleted": result.document_ids,
        "chunks_removed": result.chunks_removed,
        "tainted": result.tainted,
        "served_before": result.served_before,
        "served": result.served,
    }
    if result.served != result.served_before:
        try:
            await run_in_threadpool(switcher.reload)
        except AdapterIntegrityError as exc:  # the document is gone already: report, not fail
            body["serving_error"] = str(exc)
    return body


@router.post("/v1/search")
async def search(
    request: Request, body: SearchRequest, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    """The chunks closest to `query` that the key's groups may see, best first."""
    store = _store(request)
    groups = list(principal.groups)
    hits = await run_in_threadpool(lambda: store.retrieve(body.query, body.k, groups=groups))
    return {
        "object": "list",
        "data": [
            {
                "chunk_id": h.chunk_id,
                "document_id": h.document_id,
                "name": h.name,
                "title": h.title,
                "version": h.version,
                "heading": h.heading,
                "page_start": h.page_start,
                "page_end": h.page_end,
                "score": h.score,
                "text": h.text,
            }
            for h in hits
        ],
    }
