"""The app's outer guard: what a request may cost before any route sees it (issue 11).

    app.add_middleware(RequestGuard, settings=settings, db=db)   # in create_app, inside metrics

Pure ASGI (streamed answers pass through untouched). In order, for each HTTP request:

1. `serving.auth: open` only: a state-changing request (not GET/HEAD/OPTIONS) from another
   origin (`Origin`, or `Sec-Fetch-Site: cross-site`), and any request whose `Host` is not a
   loopback name (DNS rebinding), get 403: a web page the user visits must not drive the local
   admin API.
2. A `Content-Length` over the limit gets 413 before anything else (auth included): uploads
   (`POST /v1/documents`) may have `knowledge.max_upload_bytes` + 64 KiB, everything else
   `serving.max_body_bytes`. A body without a length is counted while it is read and cut off
   with the same 413 once over.
3. `/v1/*` (any path there, known or not), `/tokenize` and `/admin/*` need a key: one missing
   or unknown gets 401 before the body is read (`assistant.auth`; the principal is kept for the
   routes, which do not look it up again).
4. At most `serving.max_concurrent_per_key` requests of one key in flight (a streamed answer
   counts until its end); more get 429 with `Retry-After`. (Open mode has no keys: only the
   connection cap of assistant/http_protocol.py applies there.)
5. A JSON body holding a lone UTF-16 surrogate (`"\\ud800"`: valid JSON, not valid Unicode,
   and a 500 deep inside the tokenizer or the database) gets 400.

Every refusal has the API's error shape, `{"error": {"message", "type"}}`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.auth import LOCAL_ADMIN, Principal, authenticate, is_loopback, is_protected
from knowledge.errors import (
    BadInputError,
    ForbiddenError,
    ProtegeError,
    RateLimitedError,
    TooLargeError,
    UnauthorizedError,
)
from knowledge.settings import Settings

UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and form fields around the file
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# a \uD800-\uDFFF escape, not itself escaped (an even run of backslashes before it)
_SURROGATE_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def error_body(exc: ProtegeError) -> dict[str, Any]:
    return {"error": {"message": str(exc), "type": type(exc).__name__}}


def error_headers(exc: ProtegeError) -> dict[str, str]:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return headers


class _BodyTooLarge(Exception):
    """Raised from the counting `receive` once a body without a length runs over."""


class KeySlots:
    """Requests in flight per key; `acquire` refuses past the limit (thread- and loop-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> Callable[[], None]:
        with self._lock:
            count = self._in_flight.get(key, 0)
            if count >= self.limit:
                raise RateLimitedError(
                    f"{count} requests of this API key are in flight; at most {self.limit} "
                    "(serving.max_concurrent_per_key): retry after the others finish",
                    retry_after=1,
                )
            self._in_flight[key] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]

        return release

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._in_flight.get(key, 0)


class RequestGuard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings, db: Engine) -> None:
        self.app = app
        self.settings = settings
        self.db = db
        self.slots = KeySlots(settings.serving.max_concurrent_per_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self._check_origin(scope, headers)
            limit = self._body_limit(scope)
            length = headers.get("content-length")
            if length is not None:
                if not length.strip().isdigit():
                    raise BadInputError("Content-Length is not a number")
                if int(length) > limit:
                    raise TooLargeError(
                        f"the request body is {int(length):,} bytes; the limit here is {limit:,}"
                    )
            principal = await self._authenticate(scope, headers)
            # per key: open mode has none (every caller is the local admin), so no such cap
            keyed = principal is not None and principal.key_prefix is not None
            release = self.slots.acquire(principal.key_prefix) if keyed else None
        except ProtegeError as exc:
            await _refuse(send, exc)
            return
        try:
            await self._call_app(scope, receive, send, headers, limit)
        finally:
            if release is not None:
                release()

    # -- the checks ------------------------------------------------------------------------------
    def _check_origin(self, scope: Scope, headers: dict[str, str]) -> None:
        if self.settings.serving.auth != "open":
            return
        host = headers.get("host", "")
        if not is_loopback(_hostname(host)):
            raise ForbiddenError(
                f"open mode answers requests for a loopback host only, not {host[:80]!r}"
            )
        if scope["method"] in _SAFE_METHODS:
            return
        origin = headers.get("origin")
        cross = origin is not None and (origin == "null" or urlsplit(origin).netloc != host)
        if cross or headers.get("sec-fetch-site") == "cross-site":
            raise ForbiddenError(
                f"cross-origin {scope['method']} refused in open mode (origin {origin!r}): "
                "without API keys any web page could act as the local admin"
            )

    def _body_limit(self, scope: Scope) -> int:
        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/documents":
            return self.settings.knowledge.max_upload_bytes + UPLOAD_OVERHEAD
        return self.settings.serving.max_body_bytes

    async def _authenticate(self, scope: Scope, headers: dict[str, str]) -> Principal | None:
        if not is_protected(scope["path"]):
            return None
        if self.settings.serving.auth == "open":
            principal = LOCAL_ADMIN
        else:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthorizedError(
                    "an API key is required: send 'Authorization: Bearer <key>' "
                    "(an admin creates keys with `protege keys create`)"
                )
            principal = await run_in_threadpool(authenticate, self.db, token.strip())
        scope.setdefault("state", {})["principal"] = principal  # request.state.principal
        return principal

    # -- the body --------------------------------------------------------------------------------
    async def _call_app(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], limit: int
    ) -> None:
        total = 0
        refused: list[ProtegeError] = []

        async def counted() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    refused.append(TooLargeError(f"the request body is over {limit:,} bytes"))
                    raise _BodyTooLarge
            return message

        downstream: Receive = counted
        if "json" in headers.get("content-type", "") and scope["method"] not in _SAFE_METHODS:
            try:
                body = await _read_all(counted)
            except _BodyTooLarge:
                await _refuse(send, refused[0])
                return
            if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(body):
                await _refuse(
                    send,
                    BadInputError(
                        "the JSON body holds a lone UTF-16 surrogate escape (such as \\ud800): "
                        "not valid Unicode text"
                    ),
                )
                return
            downstream = _replay(body, receive)

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the app's answer to a cut-off body (400, 500): ours goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, downstream, tracked)
        except _BodyTooLarge:
            pass  # the app let it through: answered below
        if refused and not started:
            await _refuse(send, refused[0])


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8321
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _read_all(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app will see a truncated body
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the read body once, then the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _has_lone_surrogate(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False  # not JSON at all: the route's own 422 says so
    stack = [parsed]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def _refuse(send: Send, exc: ProtegeError) -> None:
    body = json.dumps(error_body(exc)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
    headers.append((b"connection", b"close"))  # a body that may follow is not read
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
