"""The HTTP API: OpenAI-compatible chat with retrieval-grounded answers, uploads, adapter reload.

    app = create_app(load_settings("sandbox"))          # serve with `python -m assistant.server`
    curl -s localhost:8321/v1/chat/completions -H 'content-type: application/json' \
         -d '{"model": "protege", "messages": [{"role": "user", "content": "Who leads Zephyr?"}]}'

Endpoints: POST /v1/chat/completions (stream or not), GET /v1/models, POST /admin/adapters/reload,
GET /healthz; documents and search (POST/GET /v1/documents, GET/DELETE /v1/documents/{id},
POST /v1/search) are in assistant/routes_documents.py.

Extra fields beside the OpenAI ones in chat answers: `adapter_version`, `sources`
([{document_id, title, chunk_id}]) and `exchange_id` (the logged row); the adapter version is also
in the `X-Protege-Adapter-Version` header. Streaming is real token streaming (the engine hands
over text deltas as it decodes); `sources` and `adapter_version` ride on the first chunk,
`exchange_id` on the last. Temperature defaults to 0 (greedy), unlike OpenAI's 1: a company
assistant should answer the same question the same way. max_tokens defaults to and is capped at
`serving.max_new_tokens` (one worker serves everyone).

Auth (assistant/auth.py): /v1/* needs `Authorization: Bearer <key>`, /admin/* an admin key; the
key's user is logged with each exchange and its groups decide what retrieval may use. Feedback and
opt-out: assistant/routes_feedback.py; /readyz and /metrics: assistant/routes_ops.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from assistant.auth import Principal, check_open_mode, current_principal, gate
from assistant.embedded_engine import EmbeddedEngine
from assistant.engine import Engine, GenerationParams, GenerationResult, Message
from assistant.hotswap import AdapterSwitcher
from assistant.metrics import Metrics, MetricsMiddleware
from assistant.routes_completions import router as completions_router
from assistant.routes_documents import router as documents_router
from assistant.routes_feedback import router as feedback_router
from assistant.routes_learning import router as learning_router
from assistant.routes_ops import router as ops_router
from assistant.routes_ui import install_ui
from assistant.vllm_engine import VllmEngine
from knowledge.db import open_database
from knowledge.errors import BadInputError, NotFoundError, ProtegeError
from knowledge.prompting import grounded_user_message
from knowledge.settings import Settings
from knowledge.store import KnowledgeStore, RetrievedChunk
from knowledge.tables import Exchange
from learner.registry import Registry
from learner.scheduler import start_in_server

log = logging.getLogger(__name__)

MODEL_ID = "protege"
VERSION_HEADER = "X-Protege-Adapter-Version"


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = ""

    def as_message(self) -> Message:
        parts = self.content or ""
        text = parts if isinstance(parts, str) else "".join(p.text for p in parts)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat request fields protege honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app. Without `engine`, loads the student of `settings.models.student`.

    An engine passed in stays the caller's (not closed at shutdown).
    """
    check_open_mode(settings)  # before loading anything: open mode off loopback is refused
    owns_engine = engine is None
    engine = engine if engine is not None else _engine_from_settings(settings)
    db = open_database(settings.db_url)
    switcher = AdapterSwitcher(Registry(settings), engine)
    store = KnowledgeStore(settings, count_tokens=engine.count_tokens)
    metrics = Metrics(switcher)
    switcher.on_swap = metrics.observe_swap

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(switcher.sync)  # serve whatever the registry says is served
        if settings.serving.retrieval:  # this process owns the Chroma folder: repair it first
            removed, added = await run_in_threadpool(store.sync_index)
            if removed or added:
                log.warning(
                    "vector index repaired: %d stray vectors removed, %d added", removed, added
                )
        switcher.start(settings.serving.registry_poll_seconds)
        log.info("protege serving adapter %s", switcher.served)
        app.state.scheduler = start_in_server(settings)  # None unless schedule.in_server
        app.state.started = True  # /readyz
        try:
            yield
        finally:
            if app.state.scheduler is not None:  # wait=False: a running cycle ends in its thread
                app.state.scheduler.shutdown(wait=False)
            switcher.stop()
            if owns_engine:
                await run_in_threadpool(engine.close)

    # `gate` guards /v1/* (any key) and /admin/* (admin key), whichever router adds the route
    app = FastAPI(title="protege", version="0.1.0", lifespan=lifespan, dependencies=[Depends(gate)])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.settings = settings
    app.state.engine = engine
    app.state.switcher = switcher
    app.state.store = store
    app.state.db = db
    app.state.metrics = metrics

    @app.exception_handler(ProtegeError)
    async def protege_error(_: Request, exc: ProtegeError) -> JSONResponse:
        # the only place domain errors become HTTP errors
        return JSONResponse(
            status_code=exc.http_status,
            content={"error": {"message": str(exc), "type": type(exc).__name__}},
            headers={"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None,
        )

    # ---- chat ----------------------------------------------------------------------------------
    def ground(
        messages: list[Message], groups: tuple[str, ...]
    ) -> tuple[list[Message], list[RetrievedChunk]]:
        """Put passages the caller's `groups` may see into the last user turn (blocking)."""
        if not settings.serving.retrieval:
            return messages, []
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            return messages, []
        last = users[-1]
        question = messages[last]["content"]
        chunks = store.retrieve(question, settings.knowledge.top_k, groups=groups)
        if not chunks:
            return messages, []
        grounded = list(messages)
        grounded[last] = {
            "role": "user",
            "content": grounded_user_message(question, [c.text for c in chunks]),
        }
        return grounded, chunks

    def log_exchange(
        messages: list[Message],
        result: GenerationResult,
        chunks: list[RetrievedChunk],
        started: float,
        user: str,
    ) -> int | None:
        metrics.observe_generation(result)
        row = Exchange(
            user=user,
            messages_json=json.dumps(messages, ensure_ascii=False),
            answer=result.text,
            adapter_version=result.adapter_version,
            chunk_ids_json=json.dumps([c.chunk_id for c in chunks]),
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        )
        try:
            with Session(db, expire_on_commit=False) as session:
                session.add(row)
                session.commit()
                return row.id
        except Exception:  # the user still gets the answer; the missing row is logged loudly
            log.exception("could not log the exchange (adapter %s)", result.adapter_version)
            return None

    def submit_pinned(
        messages: list[Message], params: GenerationParams, on_text: Any = None
    ) -> tuple[str, Future[GenerationResult]]:
        """Pin the served version and queue the generation; the pin is held until it finishes."""
        version = switcher.acquire()
        try:
            future = engine.submit(messages, params, version, on_text=on_text)
        except BaseException:
            switcher.release(version)
            raise
        # released when the generation ends, even if the client has gone away meanwhile
        future.add_done_callback(lambda _: switcher.release(version))
        return version, future

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatRequest, principal: Principal = Depends(current_principal)
    ) -> JSONResponse | StreamingResponse:
        started = time.perf_counter()
        if body.model != MODEL_ID:
            raise NotFoundError(f"unknown model {body.model!r}; this server serves {MODEL_ID!r}")
        if body.n != 1:
            raise BadInputError("only n=1 is supported")
        cap = settings.serving.max_new_tokens
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        params = GenerationParams(
            max_tokens=min(body.max_completion_tokens or body.max_tokens or cap, cap),
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(s for s in stops if s),
        )
        messages = [m.as_message() for m in body.messages]
        model_messages, chunks = await run_in_threadpool(ground, messages, principal.groups)
        sources = [
            {"document_id": c.document_id, "title": c.title, "chunk_id": c.chunk_id} for c in chunks
        ]
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        if not body.stream:
            _, future = submit_pinned(model_messages, params)
            result = await asyncio.wrap_future(future)
            exchange_id = await run_in_threadpool(
                log_exchange, messages, result, chunks, started, principal.user
            )
            content = {
                "id": reply_id,
                "object": "chat.completion",
                "created": created,
                "model": MODEL_ID,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": _usage(result),
                "adapter_version": result.adapter_version,
                "sources": sources,
                "exchange_id": exchange_id,
            }
            return JSONResponse(content, headers={VERSION_HEADER: result.adapter_version})

        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()

        def push(item: str | None) -> None:  # from the engine's worker thread
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, item)
            except RuntimeError:  # the event loop is gone (shutdown); nobody is listening
                pass

        version, future = submit_pinned(model_messages, params, on_text=push)
        future.add_done_callback(lambda _: push(None))
        # wait for the first delta (or the end) so errors before any output are real HTTP errors
        first = await deltas.get()
        if first is None:
            future.result()  # raises the engine's error, if any, into the exception handler
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
            payload = {
                "id": reply_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL_ID,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk(
                {"role": "assistant", "content": ""}, adapter_version=version, sources=sources
            )
            item = first
            while item is not None:
                yield chunk({"content": item})
                item = await deltas.get()
            try:
                result = future.result()
            except ProtegeError as exc:  # headers are sent: the error goes in the stream
                yield f"data: {json.dumps({'error': {'message': str(exc), 'type': type(exc).__name__}})}\n\n"
                return
            exchange_id = await run_in_threadpool(
                log_exchange, messages, result, chunks, started, principal.user
            )
            yield chunk({}, result.finish_reason, adapter_version=version, exchange_id=exchange_id)
            if include_usage:
                usage = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                         "model": MODEL_ID, "choices": [], "usage": _usage(result)}  # fmt: skip
                yield f"data: {json.dumps(usage)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={VERSION_HEADER: version, "Cache-Control": "no-cache"},
        )

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

    app.include_router(documents_router)  # /v1/documents[/{id}], /v1/search
    app.include_router(completions_router)  # /v1/completions, /tokenize (protege as a teacher)
    app.include_router(feedback_router)  # /v1/feedback, /v1/me, /v1/me/training-opt-out
    app.include_router(ops_router)  # /readyz, /metrics
    app.include_router(learning_router)  # /admin/runs, /admin/adapters[/promote|/rollback]
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


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
