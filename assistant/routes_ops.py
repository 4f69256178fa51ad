"""Operations endpoints: readiness and Prometheus metrics (no key needed, like /healthz).

    curl -i localhost:8321/readyz     # 200 ready; 503 with the failing check named
    curl -s localhost:8321/metrics    # Prometheus text format (assistant/metrics.py)

/healthz (in assistant/app.py) says the process is up; /readyz says it can answer now: start-up
finished (adapter synced, index repaired), the engine holds the served adapter, the database
answers a query, and (with retrieval) the vector index could be read at start; a broken index
names the command that rebuilds it. A load balancer sends traffic only to ready replicas.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from learner.registry import BASE

router = APIRouter()


def _checks(request: Request) -> dict[str, str]:
    """Each check's result: "ok" or what is wrong (blocking: run in a thread)."""
    state = request.app.state
    checks = {"startup": "ok" if getattr(state, "started", False) else "still starting"}
    if state.settings.serving.retrieval:
        checks["index"] = "ok" if state.index_error is None else state.index_error
    served = state.switcher.served
    try:
        loaded = served == BASE or served in state.engine.loaded_versions()
        checks["engine"] = "ok" if loaded else f"adapter {served} is not loaded"
    except Exception as exc:  # an engine that cannot answer is exactly what this reports
        checks["engine"] = f"error: {exc!r}"
    try:
        with state.db.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # likewise: report, do not raise
        first_line = (str(exc).splitlines() or [""])[0][:200]
        checks["database"] = f"error: {type(exc).__name__}: {first_line}"
    return checks


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(_checks, request)
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
