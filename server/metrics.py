"""Prometheus metrics (``GET /metrics``), one registry per app so tests stay independent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from actors.turn_timing import TurnTiming
from server.app_keys import METRICS

if TYPE_CHECKING:
    from actors.registry import Registry
    from cluster.node import ClusterNode
    from server.batch_writer import BatchWriter
    from server.janitor import Janitor
    from server.overload import LagMonitor
    from server.redis_conn import RedisHealth


#: When this request reached the middlewares (``time.perf_counter()``): a turn's clock
#: starts here, so ``auth`` (the session lookup) is part of its time to first token.
REQUEST_STARTED: web.RequestKey[float] = web.RequestKey("cero_request_started")

#: Buckets of ``cero_turn_phase_seconds``: fine below 10 ms, where the phases of a turn's
#: time to first token live (50 µs steps near the median of the short ones).
PHASE_BUCKETS = (
    0.00005,
    0.0001,
    0.00015,
    0.0002,
    0.0003,
    0.0004,
    0.0005,
    0.00075,
    0.001,
    0.00125,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class Metrics:
    """Counters the server increments, and readings of its state taken at each scrape
    (declared by the ``bind_*`` methods once the app's runtime exists)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        # process_open_fds, process_resident_memory_bytes, process_cpu_seconds_total...
        ProcessCollector(registry=registry)
        self.tokens = Counter(
            "cero_tokens_streamed",
            "Token events published by conversation actors",
            registry=registry,
        )
        self.connections = Gauge(
            "cero_connections", "Open live connections", ["transport"], registry=registry
        )
        route_labels = ["method", "route", "status"]
        self.responses = Counter(
            "cero_http_responses",
            "HTTP responses by route template and status (errors and streams included)",
            route_labels,
            registry=registry,
        )
        self.requests = Histogram(
            "cero_http_request_seconds",
            "HTTP request latency until the response starts (streams excluded)",
            route_labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.ws_closed_slow = Counter(
            "cero_ws_slow_consumer_closes",
            "WebSockets closed with 4008 (slow consumer)",
            registry=registry,
        )
        self.limit_refusals = Counter(
            "cero_limit_refusals",
            "Requests refused by a per-user or per-socket limit (429 or fault), by limit",
            ["limit"],
            registry=registry,
        )
        # One child per provider that holds upstream connections (bind_provider).
        self.model_streams = Gauge(
            "cero_model_streams",
            "Model streams holding a connection to the upstream",
            ["provider"],
            registry=registry,
        )
        self.model_max_connections = Gauge(
            "cero_model_max_connections",
            "Bound on connections to the upstream (CERO_MODEL_MAX_CONNECTIONS)",
            ["provider"],
            registry=registry,
        )
        self.redis_errors: Counter | None = None  # cluster mode only: bind_redis
        self.turn_phases = Histogram(
            "cero_turn_phase_seconds",
            "Phases of a turn's time to first token (actors/turn_timing.py names them)",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self._phase_children: dict[str, Any] = {}

    def _reading(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at each scrape."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def bind_redis(self, health: RedisHealth) -> None:
        """Cluster mode's Redis metrics (absent without ``CERO_REDIS_URL``)."""
        up = Gauge(
            "cero_redis_up",
            "1 while cluster mode's Redis answers, 0 while it does not (sends get 503)",
            registry=self.registry,
        )
        up.set_function(lambda: 1.0 if health.up else 0.0)
        self.redis_errors = Counter(
            "cero_redis_errors",
            "Redis commands that failed (unreachable, timeout, error), by operation",
            ["op"],
            registry=self.registry,
        )

    def observe_phase(self, phase: str, seconds: float) -> None:
        child = self._phase_children.get(phase)
        if child is None:
            child = self._phase_children[phase] = self.turn_phases.labels(phase)
        child.observe(seconds)

    def turn_timing(self, request: web.Request) -> TurnTiming:
        """A turn's clock, started when ``request`` reached the middlewares."""
        return TurnTiming(self.observe_phase, request.get(REQUEST_STARTED))

    def bind_lag(self, monitor: LagMonitor) -> None:
        self._reading(
            "cero_event_loop_lag_seconds",
            "Worst event-loop lag in the last 2 s (past CERO_MAX_LOOP_LAG: 503 overloaded)",
            lambda: monitor.lag,
        )
        self._reading(
            "cero_overloaded_refusals",
            "Sends refused with 503 overloaded since start",
            lambda: monitor.refused,
        )

    def bind_cluster(self, node: ClusterNode) -> None:
        """Cluster mode: leases, the shared log, forwarded commands."""
        for name, text, read in (
            ("cero_cluster_leases_held", "Conversation leases this process holds", "held"),
            ("cero_cluster_forwarded_commands", "Commands forwarded to an owner", "forwarded"),
            ("cero_cluster_log_appends", "Events appended to Redis streams", "appended"),
            ("cero_cluster_log_pipelines", "Pipelines sent by the log writer", "pipelines"),
            ("cero_cluster_relayed_events", "Events the relay read from Redis", "relayed"),
            ("cero_cluster_relay_reads", "Blocking reads (XREAD) the relay made", "relay_reads"),
            ("cero_cluster_relay_lag_seconds", "Owner's append to relay read, last", "relay_lag"),
        ):
            gauge = Gauge(name, text, registry=self.registry)

            def value(attribute: str = read) -> float:
                current = getattr(node, attribute)
                return float(len(current) if isinstance(current, dict) else current)

            gauge.set_function(value)

    def bind_registry(self, registry: Registry) -> None:
        loop = asyncio.get_running_loop()
        self._reading(
            "cero_asyncio_tasks",
            "asyncio tasks alive in this process's event loop (a leak grows it)",
            lambda: len(asyncio.all_tasks(loop)),
        )
        self._reading(
            "cero_live_actors", "Conversation actors alive in this process", lambda: len(registry)
        )
        self._reading(
            "cero_dormant_conversations",
            "Subscribed conversations whose idle actor stopped (their log is kept)",
            lambda: registry.dormant_count,
        )

    def bind_writer(self, writer: BatchWriter, janitor: Janitor) -> None:
        writer.on_phase = self.observe_phase
        self._reading(
            "cero_db_write_queue",
            "Hot-path writes (turn starts, flushes, terminal states) waiting for the writer",
            lambda: writer.pending,
        )
        self._reading(
            "cero_db_write_batches",
            "Transactions committed by the batch writer since start",
            lambda: writer.batches,
        )
        self._reading(
            "cero_db_write_ops",
            "Writes committed by the batch writer since start (ops / batches = batch size)",
            lambda: writer.ops,
        )
        self._reading(
            "cero_db_janitor_pending",
            "Terminal states that failed past their retries, waiting to be stored",
            lambda: janitor.pending,
        )

    def bind_provider(self, name: str, provider: object) -> None:
        """Providers that hold upstream connections expose ``open_streams`` and
        ``max_connections``."""
        streams = getattr(provider, "open_streams", None)
        if streams is None:
            return
        self.model_streams.labels(name).set_function(
            lambda: float(getattr(provider, "open_streams", 0))
        )
        self.model_max_connections.labels(name).set(float(getattr(provider, "max_connections", 0)))


def route_template(request: web.Request) -> str:
    """The matched route's template (``/api/conversations/{id}``), never the raw path: one
    label value per route, whatever ids clients send. Unmatched paths share one value."""
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every response. It runs outside ``error_middleware`` so that raised errors
    (already rendered as JSON responses there) are counted with their status; what still
    raises here (redirects, an exception no inner middleware rendered) is counted too."""
    started = request[REQUEST_STARTED] = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _observe(request, metrics, exc.status, started)
        raise
    except Exception:
        _observe(request, metrics, 500, started)
        raise
    # Streams (SSE, NDJSON, WebSocket) are counted, but their latency is their own metric.
    _observe(request, metrics, response.status, None if response.prepared else started)
    return response


def _observe(request: web.Request, metrics: Metrics, status: int, started: float | None) -> None:
    labels = (request.method, route_template(request), str(status))
    metrics.responses.labels(*labels).inc()
    if started is not None:
        metrics.requests.labels(*labels).observe(time.perf_counter() - started)


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
