"""The HTTP API: OpenAI-compatible chat with retrieval-grounded answers, uploads, adapter reload.

    app = create_app(load_settings("sandbox"))          # serve with `python -m assistant.server`
    curl -s localhost:8321/v1/chat/completions -H 'content-type: application/json' \
         -d '{"model": "protege", "messages": [{"role": "user", "content": "Who leads Zephyr?"}]}'

Endpoints: chat (assistant/routes_chat.py), GET /v1/models, POST /admin/adapters/reload,
GET /healthz; documents, jobs and search in assistant/routes_documents.py; completions and
tokenize in assistant/routes_completions.py; feedback and opt-out in assistant/routes_feedback.py;
/readyz and /metrics in assistant/routes_ops.py; eval items in assistant/routes_evals.py.

Auth (assistant/auth.py): /v1/* needs `Authorization: Bearer <key>`, /admin/* an admin key; the
key's user is logged with each exchange and its groups decide what retrieval may use.
`assistant.guard.RequestGuard` refuses, before any route runs, bodies over the limits, missing
keys, too many requests in flight per key and (open mode) cross-origin writes; the HTTP protocol
(assistant/http_protocol.py) times out slow clients. README, "Limits", lists every limit.

A vector index that cannot be read does not stop the server: it starts not ready (/readyz 503
naming `protege knowledge check --repair`), and routes that need the index answer 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from assistant.auth import check_open_mode, gate
from assistant.embedded_engine import EmbeddedEngine
from assistant.engine import Engine
from assistant.guard import RequestGuard, error_body, error_headers
from assistant.hotswap import AdapterSwitcher
from assistant.jobs import IngestJobs
from assistant.metrics import Metrics, MetricsMiddleware
from assistant.routes_chat import MODEL_ID
from assistant.routes_chat import router as chat_router
from assistant.routes_completions import router as completions_router
from assistant.routes_documents import router as documents_router
from assistant.routes_evals import router as evals_router
from assistant.routes_feedback import router as feedback_router
from assistant.routes_learning import router as learning_router
from assistant.routes_ops import router as ops_router
from assistant.routes_ui import install_ui
from assistant.vllm_engine import VllmEngine
from knowledge.db import open_database, private_dirs
from knowledge.errors import IndexUnavailableError, ProtegeError
from knowledge.parse_worker import shutdown_workers
from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner.registry import Registry
from learner.scheduler import start_in_server

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app. Without `engine`, loads the student of `settings.models.student`.

    An engine passed in stays the caller's (not closed at shutdown).
    """
    check_open_mode(settings)  # before loading anything: open mode off loopback is refused
    private_dirs(settings)  # owner-only data folders, before anything creates files in them
    owns_engine = engine is None
    engine = engine if engine is not None else _engine_from_settings(settings)
    db = open_database(settings.db_url)
    switcher = AdapterSwitcher(Registry(settings), engine)
    store = KnowledgeStore(settings, count_tokens=engine.count_tokens)
    metrics = Metrics(switcher)
    switcher.on_swap = metrics.observe_swap
    jobs = IngestJobs(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(switcher.sync)  # serve whatever the registry says is served
        await run_in_threadpool(jobs.recover)  # jobs a crash interrupted: failed, files removed
        if settings.serving.retrieval:  # this process owns the Chroma folder: repair it first
            try:
                removed, added = await run_in_threadpool(store.sync_index)
            except IndexUnavailableError as exc:  # start anyway, not ready, saying what to run
                app.state.index_error = str(exc)
                log.error("the vector index is unusable; serving without it: %s", exc)
            else:
                if removed or added:
                    log.warning(
                        "vector index repaired: %d stray vectors removed, %d added", removed, added
                    )
        switcher.start(settings.serving.registry_poll_seconds)
        jobs.start()
        log.info("protege serving adapter %s", switcher.served)
        app.state.scheduler = start_in_server(settings)  # None unless schedule.in_server
        app.state.started = True  # /readyz
        try:
            yield
        finally:
            shutdown_workers()  # a parse in progress must not hold the shutdown up
            jobs.stop()
            if app.state.scheduler is not None:  # wait=False: a running cycle ends in its thread
                app.state.scheduler.shutdown(wait=False)
            switcher.stop()
            if owns_engine:
                await run_in_threadpool(engine.close)

    docs = settings.serving.api_docs  # Swagger UI and ReDoc load their code from a CDN
    # `gate` guards /v1/* (any key) and /admin/* (admin key), whichever router adds the route
    app = FastAPI(
        title="protege",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(gate)],
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        # one file and a few fields per upload (multipart parsing spools the file to disk)
        form_limits={"max_files": 1, "max_fields": 8},
    )
    app.add_middleware(RequestGuard, settings=settings, db=db)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts refusals too
    app.state.settings = settings
    app.state.engine = engine
    app.state.switcher = switcher
    app.state.store = store
    app.state.db = db
    app.state.metrics = metrics
    app.state.jobs = jobs
    app.state.index_error = None

    @app.exception_handler(ProtegeError)
    async def protege_error(_: Request, exc: ProtegeError) -> JSONResponse:
        # the only place domain errors become HTTP errors
        return JSONResponse(
            status_code=exc.http_status, content=error_body(exc), headers=error_headers(exc)
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # a bug, not bad input: logged with its traceback, answered as JSON (not a reset)
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        message = f"internal error ({type(exc).__name__}); the server log has the details"
        return JSONResponse(status_code=500, content={"error": {"message": message,
                                                                "type": "InternalError"}})  # fmt: skip

    # ---- models, documents, admin ---------------------------------------------------------------
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        served = switcher.served
        return {
            "object": "list",
            "data": [
                {
                    "id": MODEL_ID,
                    "object": "model",
                    "created": 0,
                    "owned_by": "protege",
                    "adapter_version": served,
                }
            ],  # fmt: skip
        }

    app.include_router(chat_router)  # /v1/chat/completions
    app.include_router(documents_router)  # /v1/documents[/{id}], /v1/jobs/{id}, /v1/search
    app.include_router(completions_router)  # /v1/completions, /tokenize (protege as a teacher)
    app.include_router(feedback_router)  # /v1/feedback, /v1/me, /v1/me/training-opt-out
    app.include_router(ops_router)  # /readyz, /metrics
    app.include_router(learning_router)  # /admin/runs, /admin/adapters[/promote|/rollback]
    app.include_router(evals_router)  # /admin/evals[/{id}]
    install_ui(app)  # web pages /, /ui/documents, /ui/learning and /ui/static/

    @app.post("/admin/adapters/reload")
    async def reload_adapters() -> dict[str, object]:
        # AdapterIntegrityError -> 409 via the handler; the served version is unchanged then
        return (await run_in_threadpool(switcher.reload)).as_dict()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "adapter_version": switcher.served,
            "last_error": switcher.last_error,
        }

    return app


def _engine_from_settings(settings: Settings) -> Engine:
    """`serving.engine`: the embedded model, or a client of the vLLM server at serving.vllm_url."""
    if settings.serving.engine == "vllm":
        return VllmEngine.from_settings(settings)
    return EmbeddedEngine.from_settings(settings)
