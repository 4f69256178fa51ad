"""Prometheus metrics of one app, and the ASGI middleware that counts its requests.

    metrics = Metrics(switcher)              # one CollectorRegistry per app (tests run several)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    switcher.on_swap = metrics.observe_swap
    metrics.observe_generation(result)       # after each chat answer
    body, content_type = metrics.render()    # GET /metrics (assistant/routes_ops.py)

Exposed: `protege_requests_total{route,method,status}`, `protege_request_seconds{route}` (a
histogram; a streamed answer counts until its last byte), `protege_prompt_tokens_total`,
`protege_completion_tokens_total`, `protege_adapter_swaps_total` (every version change since start,
the first load at start included) and `protege_adapter_served{version}` (1 for the served one).
Routes are labelled by their template (`/v1/documents/{doc_id}`), unknown paths as `unmatched`, so
the label set stays small whatever clients request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.engine import GenerationResult
from assistant.hotswap import AdapterSwitcher, SwapResult

# Chat on a CPU takes seconds; the upper buckets keep slow generations apart.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _ServedAdapter(Collector):
    """Reads the served version at scrape time, so it is right whoever swapped."""

    def __init__(self, switcher: AdapterSwitcher) -> None:
        self.switcher = switcher

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "protege_adapter_served", "The adapter version being served (1)", labels=["version"]
        )
        gauge.add_metric([self.switcher.served], 1.0)
        yield gauge


class Metrics:
    def __init__(self, switcher: AdapterSwitcher) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "protege_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "protege_request_seconds", "HTTP request latency", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("protege_prompt_tokens", "Prompt tokens read", registry=r)
        self.completion_tokens = Counter(
            "protege_completion_tokens", "Completion tokens generated", registry=r
        )
        self.swaps = Counter("protege_adapter_swaps", "Served adapter changes", registry=r)
        r.register(_ServedAdapter(switcher))

    def observe_generation(self, result: GenerationResult) -> None:
        self.prompt_tokens.inc(result.prompt_tokens)
        self.completion_tokens.inc(result.completion_tokens)

    def observe_swap(self, result: SwapResult) -> None:
        if result.changed:
            self.swaps.inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # the router put the matched route into the (shared) scope on the way in; a request
            # refused before routing (assistant/guard.py) is matched here, to count under it
            route: Any = scope.get("route") or _matching_route(scope)
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                template, scope["method"], status, time.perf_counter() - started
            )


def _matching_route(scope: Scope) -> Any:
    """The route a request refused before routing would have reached (None: no such route)."""
    return _first_match(getattr(scope.get("app"), "routes", ()), scope)


def _first_match(routes: Any, scope: Scope) -> Any:
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.FULL:
            continue
        # an included router (FastAPI >= 0.16x keeps them nested): the route inside it
        inner = getattr(route, "routes", None)
        inner = inner or getattr(getattr(route, "original_router", None), "routes", None)
        return (_first_match(inner, scope) if inner else None) or route
    return None
