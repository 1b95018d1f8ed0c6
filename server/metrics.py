"""Prometheus metrics (``GET /metrics``), one registry per app so tests stay independent."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from server.state import METRICS

if TYPE_CHECKING:
    from actors.registry import Registry


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tokens = Counter(
            "cero_tokens_streamed",
            "Token events published by conversation actors",
            registry=self.registry,
        )
        self.connections = Gauge(
            "cero_connections", "Open live connections", ["transport"], registry=self.registry
        )
        self.live_actors = Gauge(
            "cero_live_actors",
            "Conversation actors alive in this process",
            registry=self.registry,
        )
        self.requests = Histogram(
            "cero_http_request_seconds",
            "HTTP request latency until the response starts (streams excluded)",
            ["method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.ws_closed_slow = Counter(
            "cero_ws_slow_consumer_closes",
            "WebSockets closed with 4008 (slow consumer)",
            registry=self.registry,
        )

    def bind_registry(self, registry: Registry) -> None:
        self.live_actors.set_function(lambda: float(len(registry)))


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    if not response.prepared:  # streams are measured by their own metrics
        request.app[METRICS].requests.labels(request.method, str(response.status)).observe(
            time.perf_counter() - started
        )
    return response


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
