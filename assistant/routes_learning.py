"""Learning admin endpoints: training runs and the adapter registry (an APIRouter).

    curl localhost:8321/admin/runs?limit=20          # newest first, as `protege runs list --json`
    curl localhost:8321/admin/adapters               # every adapter with status and metrics
    curl -X POST localhost:8321/admin/adapters/promote -H 'content-type: application/json' \
         -d '{"version": "v0002"}'                   # serve v0002 now ("base": no adapter)
    curl -X POST localhost:8321/admin/adapters/rollback   # serve the previously served version

Promote and rollback change the registry (one transaction, like `protege adapters promote`) and
then hot-swap this server at once, so the answer says what is served now. Other replicas follow
through their registry polling. The web UI's learning page (assistant/routes_ui.py) uses these.
All need an admin key (assistant/auth.py's gate guards /admin/*); the deployment history records
the admin's user name as the actor.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from assistant.auth import Principal, require_admin
from assistant.cli_runs import run_row
from assistant.hotswap import AdapterSwitcher
from knowledge.db import open_database
from learner.tables import Adapter, Run

router = APIRouter()


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)


def _switcher(request: Request) -> AdapterSwitcher:
    return request.app.state.switcher


def adapter_row(adapter: Adapter, served: str) -> dict[str, Any]:
    """An adapter as JSON: registry fields, parsed metrics and documents, whether it is served."""
    return {
        "version": adapter.version,
        "status": adapter.status,
        "served": adapter.version == served,
        "parent_version": adapter.parent_version,
        "base_model": adapter.base_model,
        "run_id": adapter.run_id,
        "created_at": adapter.created_at.isoformat(),
        "documents": json.loads(adapter.documents_json or "[]"),
        "metrics": json.loads(adapter.metrics_json or "{}"),
    }


@router.get("/admin/runs")
async def list_runs(request: Request, limit: int = Query(20, ge=1, le=500)) -> dict[str, Any]:
    """Training cycles, newest first: status, stage, stage timings, metrics, message."""
    db_url = request.app.state.settings.db_url

    def read() -> list[dict[str, Any]]:
        with Session(open_database(db_url)) as session:
            query = select(Run).order_by(col(Run.id).desc()).limit(limit)
            return [run_row(r) for r in session.exec(query)]

    return {"object": "list", "data": await run_in_threadpool(read)}


@router.get("/admin/adapters")
async def list_adapters(request: Request) -> dict[str, Any]:
    """Every registered adapter, oldest first; `served` is what this server serves now."""
    switcher = _switcher(request)
    adapters = await run_in_threadpool(switcher.registry.list)
    served = switcher.served
    return {
        "object": "list",
        "served": served,
        "data": [adapter_row(a, served) for a in adapters],
    }


@router.post("/admin/adapters/promote")
async def promote_adapter(
    request: Request, body: PromoteRequest, admin: Principal = Depends(require_admin)
) -> dict[str, object]:
    """Serve `version` (checksum-verified first; 404 unknown, 409 rejected/tainted/corrupt)."""
    switcher = _switcher(request)

    def promote() -> dict[str, object]:
        # as one swap: a poll between the registry write and the swap would hide `previous`
        return switcher.apply(
            lambda: switcher.registry.promote(body.version, actor=admin.user)
        ).as_dict()

    return await run_in_threadpool(promote)


@router.post("/admin/adapters/rollback")
async def rollback_adapter(
    request: Request, admin: Principal = Depends(require_admin)
) -> dict[str, object]:
    """Serve the version served before the current one (or base)."""
    switcher = _switcher(request)

    def rollback() -> dict[str, object]:
        return switcher.apply(lambda: switcher.registry.rollback(actor=admin.user)).as_dict()

    return await run_in_threadpool(rollback)
