"""Document and search endpoints (an APIRouter included by `assistant.app.create_app`).

    curl -F file=@handbook.pdf -F visibility=groups -F groups=hr,finance localhost:8321/v1/documents
    curl localhost:8321/v1/documents                 # current documents, each with its versions
    curl localhost:8321/v1/documents/7               # one document (any version's id)
    curl -X DELETE localhost:8321/v1/documents/7     # forget every version
    curl localhost:8321/v1/search -H 'content-type: application/json' \
         -d '{"query": "vacation days", "k": 3, "groups": ["hr"]}'

There is no authentication yet (it is its own issue): the caller's groups for `/v1/search` come
from the request body, and `uploaded_by` / `deleted_by` from form or query fields, all trusted as
given. Listing shows every document's metadata (names, not content), like an admin view. Bind the
server to localhost until auth lands.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from knowledge.catalog import catalog, describe
from knowledge.errors import TooLargeError
from knowledge.store import KnowledgeStore

router = APIRouter()


def _store(request: Request) -> KnowledgeStore:
    return request.app.state.store


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4_000)
    k: int | None = Field(default=None, ge=1, le=100)
    # The caller's groups. Trusted as given until auth exists (then they come from the API key).
    groups: list[str] = Field(default_factory=list, max_length=100)


@router.post("/v1/documents", status_code=201)
async def upload_document(
    request: Request,
    file: UploadFile = File(...),
    visibility: str | None = Form(None),
    groups: str = Form(""),
    uploaded_by: str | None = Form(None),
) -> JSONResponse:
    """Multipart upload. 201: new document or version; 200: these bytes were already stored.

    `visibility` "company" | "groups" with `groups` "a,b"; neither: a new version keeps the old
    version's access, a new document is company-wide.
    """
    store = _store(request)
    limit = store.settings.knowledge.max_upload_bytes
    data = await file.read(limit + 1)  # never more than one byte past the limit
    if len(data) > limit:
        raise TooLargeError(f"{file.filename!r} is larger than the upload limit of {limit:,} bytes")

    def ingest() -> dict[str, Any]:
        result = store.ingest_bytes(
            file.filename or "", data, uploaded_by=uploaded_by, visibility=visibility, groups=groups
        )
        assert result.document.id is not None
        body = describe(store, result.document.id).as_dict()
        body["created"] = result.created
        body["replaced_id"] = result.replaced.id if result.replaced else None
        return body

    body = await run_in_threadpool(ingest)
    return JSONResponse(body, status_code=201 if body["created"] else 200)


@router.get("/v1/documents")
async def list_documents(request: Request) -> dict[str, Any]:
    infos = await run_in_threadpool(catalog, _store(request))
    return {"object": "list", "data": [info.as_dict() for info in infos]}


@router.get("/v1/documents/{doc_id}")
async def get_document(request: Request, doc_id: int) -> dict[str, Any]:
    """The document version `doc_id` belongs to, with every version and its adapters."""
    info = await run_in_threadpool(describe, _store(request), doc_id)
    return info.as_dict()


@router.delete("/v1/documents/{doc_id}")
async def delete_document(
    request: Request, doc_id: int, deleted_by: str | None = None
) -> dict[str, Any]:
    """Forget every version. `adapters`: trained on it, they still carry what it said."""
    store = _store(request)
    result = await run_in_threadpool(lambda: store.delete_document(doc_id, deleted_by=deleted_by))
    return {
        "deleted": result.document_ids,
        "chunks_removed": result.chunks_removed,
        "adapters": result.adapters,
    }


@router.post("/v1/search")
async def search(request: Request, body: SearchRequest) -> dict[str, Any]:
    """The chunks closest to `query` that a caller in `groups` may see, best first."""
    store = _store(request)
    hits = await run_in_threadpool(lambda: store.retrieve(body.query, body.k, groups=body.groups))
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
