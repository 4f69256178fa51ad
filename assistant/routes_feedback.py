"""Feedback on answers and the caller's own training opt-out (an APIRouter in create_app).

    curl localhost:8321/v1/feedback -H "Authorization: Bearer $KEY" \
         -H 'content-type: application/json' -d '{"exchange_id": 12, "rating": -1, "comment": "wrong"}'
    curl localhost:8321/v1/me/training-opt-out -H "Authorization: Bearer $KEY" \
         -H 'content-type: application/json' -d '{"opted_out": true}'
    curl localhost:8321/v1/me -H "Authorization: Bearer $KEY"      # who the key is

Feedback is a log: each call adds a row (thumbs up +1 / down -1, optional comment), kept with the
exchange and exported by `protege conversations export`. A user may rate only their own exchanges
(another user's exchange answers 404, as if it did not exist); admins may rate any.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from assistant.auth import Principal, current_principal
from knowledge.errors import NotFoundError
from knowledge.optout import opted_out_users, set_training_opt_out
from knowledge.tables import Exchange, Feedback

router = APIRouter()


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exchange_id: int = Field(ge=1, le=2**63 - 1)  # past SQL's BIGINT: 422, not a 500
    rating: Literal[1, -1]
    comment: str = Field(default="", max_length=4_000)


class OptOutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opted_out: bool


@router.post("/v1/feedback", status_code=201)
async def feedback(
    request: Request, body: FeedbackRequest, principal: Principal = Depends(current_principal)
) -> JSONResponse:
    db = request.app.state.db

    def add() -> dict[str, Any]:
        with Session(db, expire_on_commit=False) as session:
            exchange = session.get(Exchange, body.exchange_id)
            if exchange is None or not (principal.is_admin or exchange.user == principal.user):
                raise NotFoundError(f"no exchange {body.exchange_id} of user {principal.user!r}")
            row = Feedback(
                exchange_id=body.exchange_id,
                rating=body.rating,
                comment=body.comment,
                user=principal.user,
            )
            session.add(row)
            session.commit()
        return {"id": row.id, "exchange_id": row.exchange_id, "rating": row.rating,
                "comment": row.comment, "user": row.user}  # fmt: skip

    return JSONResponse(await run_in_threadpool(add), status_code=201)


@router.post("/v1/me/training-opt-out")
async def training_opt_out(
    request: Request, body: OptOutRequest, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    """Keep (true) or stop keeping (false) the caller's conversations out of training."""
    db = request.app.state.db
    await run_in_threadpool(set_training_opt_out, db, principal.user, body.opted_out)
    return {"user": principal.user, "opted_out": body.opted_out}


@router.get("/v1/me")
async def me(request: Request, principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    opted_out = principal.user in await run_in_threadpool(opted_out_users, request.app.state.db)
    return {
        "user": principal.user,
        "role": principal.role,
        "groups": list(principal.groups),
        "key_prefix": principal.key_prefix,
        "training_opt_out": opted_out,
    }
