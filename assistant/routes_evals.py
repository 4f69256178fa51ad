"""Eval items admin endpoints: the held-out questions the gate asks about each document version.

    curl localhost:8321/admin/evals?document_id=3                 # a document's items (or all)
    curl -X POST localhost:8321/admin/evals -H 'content-type: application/json' \
         -d '{"document_id": 3, "question": "Who leads Zephyr?", "answer": "Ada Park"}'
    curl -X PATCH localhost:8321/admin/evals/12 -H 'content-type: application/json' \
         -d '{"answer": "Ada Park-Lee"}'
    curl -X DELETE localhost:8321/admin/evals/12

The teacher writes them each night (learner/evals/written.py, which holds the rules); an admin
corrects them here, on the learning page or with `protege evals`. Changes apply from the next
cycle. All need an admin key (assistant/auth.py's gate guards /admin/*).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from learner.evals.written import (
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    add_item,
    delete_item,
    item_json,
    list_items,
    update_item,
)

router = APIRouter()
MAX_ID = 2**63 - 1  # past SQL's BIGINT: 422, not a 500


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: int = Field(ge=1, le=MAX_ID)
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    answer: str = Field(min_length=1, max_length=MAX_ANSWER_CHARS)


class ItemChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(default=None, min_length=1, max_length=MAX_QUESTION_CHARS)
    answer: str | None = Field(default=None, min_length=1, max_length=MAX_ANSWER_CHARS)


@router.get("/admin/evals")
async def list_evals(
    request: Request, document_id: int | None = Query(None, ge=1, le=MAX_ID)
) -> dict[str, Any]:
    """Every eval item (or one document version's), by document then id."""
    items = await run_in_threadpool(list_items, request.app.state.db, document_id)
    return {"object": "list", "data": [item_json(i) for i in items]}


@router.post("/admin/evals", status_code=201)
async def add_eval(request: Request, body: NewItem) -> dict[str, Any]:
    """Add an item about a document version (404: no such document)."""
    state = request.app.state
    item = await run_in_threadpool(
        add_item, state.db, state.store, body.document_id, body.question, body.answer
    )
    return item_json(item)


@router.patch("/admin/evals/{item_id}")
async def change_eval(
    request: Request, body: ItemChange, item_id: int = Path(ge=1, le=MAX_ID)
) -> dict[str, Any]:
    """Change an item's question and/or answer (404: no such item)."""
    item = await run_in_threadpool(
        update_item, request.app.state.db, item_id, body.question, body.answer
    )
    return item_json(item)


@router.delete("/admin/evals/{item_id}")
async def delete_eval(request: Request, item_id: int = Path(ge=1, le=MAX_ID)) -> dict[str, Any]:
    """Delete an item (404: no such item)."""
    await run_in_threadpool(delete_item, request.app.state.db, item_id)
    return {"id": item_id, "deleted": True}
