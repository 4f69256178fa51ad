"""uvicorn's HTTP protocol with read deadlines and a connection cap (slow clients, issue 11).

    config = uvicorn_config(app, settings)          # what assistant/server.py serves with
    uvicorn.Server(config).run()

uvicorn has no request timeout (Kludex/uvicorn#157): `timeout_keep_alive` covers only the idle
time between requests and is reset by every byte, so 800 half-sent requests stayed open for good.
`GuardedProtocol` adds, per connection:

- a header deadline, `serving.header_timeout_seconds`: the request line and headers must arrive
  within it, counted from the connection (or from the first byte of the next request on a
  kept-alive one); a client trickling one byte a second does not reset it;
- a body deadline, `serving.body_timeout_seconds`, from the end of the headers to the end of
  the body;
- a cap, `serving.max_connections`: a connection beyond it is answered 503 and closed at once.

A deadline that passes before the response started is answered `408 Request Timeout` and the
connection closed; the app (if it was reading the body) sees the client disconnect. Only request
receipt is timed: a long streamed answer is never cut. ASGI middleware cannot do this: it runs
only once the headers are in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from fastapi import FastAPI

from knowledge.settings import Settings

try:  # uvicorn's own choice: httptools if installed, else h11
    import httptools  # noqa: F401
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools comes with chromadb's uvicorn[standard]
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _plain(status: str, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedProtocol(_Base):  # type: ignore[misc, valid-type]
    """See the module docstring. The class attributes are set per server by `protocol_for`."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._timed_cycle: Any = None  # the request whose body is being timed
        self._waiting_for_headers = False

    # -- the protocol's callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.server_state.connections) >= self.max_connections:
            # before uvicorn counts us: this connection never becomes a request
            log.warning("connection refused: %d open (serving.max_connections)",
                        len(self.server_state.connections))  # fmt: skip
            transport.write(_plain("503 Service Unavailable", "too many connections\n"))
            transport.close()
            self.transport = transport
            return
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self.connections is None or self not in self.connections:
            return  # refused in connection_made
        if self._deadline is None and self._idle():
            self._await_headers()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self not in self.server_state.connections:
            return  # refused in connection_made: uvicorn never saw it
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle now: uvicorn's keep-alive timeout takes over

    # -- deadlines -------------------------------------------------------------------------------
    def _idle(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _await_headers(self) -> None:
        self._disarm()
        self._waiting_for_headers = True
        self._timed_cycle = self.cycle  # headers are in once uvicorn makes a new cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._expired, "headers")

    def _follow(self) -> None:
        """After each read: headers done -> time the body; body done -> stop timing."""
        cycle = self.cycle
        if self._waiting_for_headers and cycle is not None and cycle is not self._timed_cycle:
            self._disarm()
            if cycle.more_body:
                self._timed_cycle = cycle
                self._deadline = self.loop.call_later(self.body_timeout, self._expired, "body")
        elif not self._waiting_for_headers and self._timed_cycle is not None:
            if not self._timed_cycle.more_body:
                self._disarm()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._timed_cycle = None
        self._waiting_for_headers = False

    def _expired(self, what: str) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        limit = self.header_timeout if what == "headers" else self.body_timeout
        log.warning("closing a connection from %s: request %s not received within %g s",
                    self.client, what, limit)  # fmt: skip
        cycle = self.cycle
        started = cycle is not None and not cycle.response_complete and cycle.response_started
        if what == "headers" or not started:
            transport.write(
                _plain("408 Request Timeout", f"request {what} not received within {limit:g} s\n")
            )
        transport.close()  # the app, if reading the body, sees the client disconnect


def protocol_for(settings: Settings) -> type[GuardedProtocol]:
    """A GuardedProtocol subclass carrying this server's limits (uvicorn wants a class)."""
    serving = settings.serving
    return type(
        "ProtegeHttpProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": serving.header_timeout_seconds,
            "body_timeout": serving.body_timeout_seconds,
            "max_connections": serving.max_connections,
        },
    )


def uvicorn_config(
    app: FastAPI, settings: Settings, *, host: str | None = None, port: int | None = None,
    log_level: str = "info",
) -> uvicorn.Config:  # fmt: skip
    """The uvicorn config protege serves with: guarded protocol, keep-alive, shutdown bound."""
    serving = settings.serving
    return uvicorn.Config(
        app,
        host=serving.host if host is None else host,
        port=serving.port if port is None else port,
        log_level=log_level,
        lifespan="on",
        http=protocol_for(settings),
        timeout_keep_alive=serving.keep_alive_seconds,
        # requests still running this long after a shutdown starts are cancelled
        timeout_graceful_shutdown=serving.shutdown_timeout_seconds,
        h11_max_incomplete_event_size=64 * 1024,  # request line + headers (h11 only)
    )
