"""`POST /v1/chat/completions`: OpenAI-compatible chat grounded in the documents the caller may see.

    curl -s localhost:8321/v1/chat/completions -H "Authorization: Bearer $KEY" \
         -H 'content-type: application/json' \
         -d '{"model": "protege", "messages": [{"role": "user", "content": "Who leads Zephyr?"}]}'

Extra fields beside the OpenAI ones: `adapter_version`, `sources` ([{document_id, title,
chunk_id}]) and `exchange_id` (the logged row); the adapter version is also in the
`X-Protege-Adapter-Version` header. Streaming is real token streaming (the engine hands over text
deltas as it decodes); `sources` and `adapter_version` ride on the first chunk, `exchange_id` on
the last. Temperature defaults to 0 (greedy), unlike OpenAI's 1: a company assistant should
answer the same question the same way. max_tokens defaults to and is capped at
`serving.max_new_tokens` (one worker serves everyone).

Caps (assistant/request_limits.py), checked before retrieval or tokenizing: messages, their
characters, stop strings. Every exchange is logged, a stream the client closed early too
(`aborted`, with the whole answer once the engine finishes it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from assistant.auth import Principal, current_principal
from assistant.engine import GenerationParams, GenerationResult, Message
from assistant.request_limits import check_chars, check_messages, checked_stops
from knowledge.errors import BadInputError, NotFoundError, ProtegeError
from knowledge.prompting import grounded_user_message
from knowledge.store import RetrievedChunk
from knowledge.tables import Exchange

log = logging.getLogger(__name__)
router = APIRouter()

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
    # protege's extension: false answers closed-book (no retrieval, no sources) even where
    # `serving.retrieval` is on: what the model itself knows, as the demo and evals ask it.
    retrieval: bool = True


def ground(
    state: Any, messages: list[Message], groups: tuple[str, ...], retrieval: bool = True
) -> tuple[list[Message], list[RetrievedChunk]]:
    """Put passages the caller's `groups` may see into the last user turn (blocking)."""
    settings = state.settings
    if not settings.serving.retrieval or not retrieval:
        return messages, []
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        return messages, []
    last = users[-1]
    question = messages[last]["content"]
    chunks = state.store.retrieve(question, settings.knowledge.top_k, groups=groups)
    if not chunks:
        return messages, []
    grounded = list(messages)
    grounded[last] = {
        "role": "user",
        "content": grounded_user_message(question, [c.text for c in chunks]),
    }
    return grounded, chunks


def log_exchange(
    state: Any,
    messages: list[Message],
    result: GenerationResult,
    chunks: list[RetrievedChunk],
    started: float,
    user: str,
    aborted: bool = False,
) -> int | None:
    """Write the exchange's row (blocking); None if the database refused (logged loudly)."""
    state.metrics.observe_generation(result)
    row = Exchange(
        user=user,
        messages_json=json.dumps(messages, ensure_ascii=False),
        answer=result.text,
        adapter_version=result.adapter_version,
        chunk_ids_json=json.dumps([c.chunk_id for c in chunks]),
        latency_ms=(time.perf_counter() - started) * 1000,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        aborted=aborted,
    )
    try:
        with Session(state.db, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
            return row.id
    except Exception:  # the user still gets the answer; the missing row is logged loudly
        log.exception("could not log the exchange (adapter %s)", result.adapter_version)
        return None


def submit_pinned(
    state: Any, messages: list[Message], params: GenerationParams, on_text: Any = None
) -> tuple[str, Future[GenerationResult]]:
    """Pin the served version and queue the generation; the pin is held until it finishes."""
    switcher = state.switcher
    version = switcher.acquire()
    try:
        future = state.engine.submit(messages, params, version, on_text=on_text)
    except BaseException:
        switcher.release(version)
        raise
    # released when the generation ends, even if the client has gone away meanwhile
    future.add_done_callback(lambda _: switcher.release(version))
    return version, future


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest, request: Request, principal: Principal = Depends(current_principal)
) -> JSONResponse | StreamingResponse:
    state = request.app.state
    settings = state.settings
    started = time.perf_counter()
    if body.model != MODEL_ID:
        raise NotFoundError(f"unknown model {body.model[:80]!r}; this server serves {MODEL_ID!r}")
    if body.n != 1:
        raise BadInputError("only n=1 is supported")
    check_messages(settings, len(body.messages))
    messages = [m.as_message() for m in body.messages]
    check_chars(settings, (m["content"] for m in messages), "the chat messages")
    cap = settings.serving.max_new_tokens
    params = GenerationParams(
        max_tokens=min(body.max_completion_tokens or body.max_tokens or cap, cap),
        temperature=body.temperature,
        top_p=body.top_p,
        stop=checked_stops(settings, body.stop),
    )
    model_messages, chunks = await run_in_threadpool(
        ground, state, messages, principal.groups, body.retrieval
    )
    sources = [
        {"document_id": c.document_id, "title": c.title, "chunk_id": c.chunk_id} for c in chunks
    ]
    reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    if not body.stream:
        _, future = submit_pinned(state, model_messages, params)
        result = await asyncio.wrap_future(future)
        exchange_id = await run_in_threadpool(
            log_exchange, state, messages, result, chunks, started, principal.user
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

    version, future = submit_pinned(state, model_messages, params, on_text=push)
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

    def log_aborted(done: Future[GenerationResult]) -> None:
        """The client left before the end: log the exchange once the engine has finished."""
        if done.cancelled() or done.exception() is not None:
            return  # no answer to log (the engine's error was logged where it happened)
        args = (state, messages, done.result(), chunks, started, principal.user, True)
        threading.Thread(target=log_exchange, args=args, name="protege-log-aborted").start()

    finished = False  # the exchange is (or will be) logged by the stream itself

    async def events() -> AsyncIterator[str]:
        nonlocal finished
        yield chunk({"role": "assistant", "content": ""}, adapter_version=version, sources=sources)
        item = first
        while item is not None:
            yield chunk({"content": item})
            item = await deltas.get()
        try:
            result = future.result()
        except ProtegeError as exc:  # headers are sent: the error goes in the stream
            finished = True
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': type(exc).__name__}})}\n\n"
            return
        finished = True  # from here the exchange is logged below, whatever the client does
        exchange_id = await run_in_threadpool(
            log_exchange, state, messages, result, chunks, started, principal.user
        )
        yield chunk({}, result.finish_reason, adapter_version=version, exchange_id=exchange_id)
        if include_usage:
            usage = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                     "model": MODEL_ID, "choices": [], "usage": _usage(result)}  # fmt: skip
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"

    def on_close() -> None:
        """The response ended: if the client left first (even before the first byte), the
        exchange is logged once the engine has finished the answer, marked aborted."""
        if not finished:
            log.info("stream %s aborted by the client; logged when the answer ends", reply_id)
            future.add_done_callback(log_aborted)

    return _Stream(
        events(),
        on_close,
        media_type="text/event-stream",
        headers={VERSION_HEADER: version, "Cache-Control": "no-cache"},
    )


class _Stream(StreamingResponse):
    """A StreamingResponse that calls `on_close` when it ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], on_close: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
