"""Prometheus metrics (``GET /metrics``), one registry per app so tests stay independent.

The ``bind_*`` methods read the components they meter through small protocols declared
here (:class:`AdmissionReadings`, :class:`WriterHooks`, :class:`Pending`): the limits and
the storage are siblings of ``ops`` in the layers, so this module names none of their types.

Why one module of ~570 lines: every family the server exposes is declared here, beside the
hooks that feed it, so that the catalog (docs and its test) matches one file.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

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
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from actors.api import GenerationTiming, Observe
from server.core.app_keys import SETTINGS
from server.core.errors import ApiError

if TYPE_CHECKING:
    from actors.api import Registry
    from cluster.process import ClusterProcess
    from cluster.state.connection import RedisHealth


class _Floor(Protocol):
    @property
    def floor(self) -> int: ...


class AdmissionReadings(Protocol):
    """What :meth:`Metrics.bind_admission` reads (:class:`server.limits.admission.Admission`)."""

    @property
    def lag(self) -> float: ...
    @property
    def cpu(self) -> float: ...
    @property
    def running(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def queued_total(self) -> int: ...
    @property
    def limits(self) -> _Floor: ...


class WriterHooks(Protocol):
    """What :meth:`Metrics.bind_writer` hooks and reads
    (:class:`server.storage.batch_writer.BatchWriter`)."""

    on_phase: Observe | None
    on_commit: Callable[[float, bool], None] | None

    @property
    def pending(self) -> int: ...
    @property
    def batches(self) -> int: ...
    @property
    def ops(self) -> int: ...


class Pending(Protocol):
    """Something with work waiting (:class:`server.storage.janitor.Janitor`)."""

    @property
    def pending(self) -> int: ...


#: The app's metrics (one registry per app).
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")


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


#: Buckets of the operator's latencies that include the model (time to first token, the
#: upstream's first chunk): from tens of milliseconds to a minute.
MODEL_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0,
    30.0, 45.0, 60.0,
)  # fmt: skip
#: Whole model streams: an answer lasts seconds to minutes.
STREAM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Event delivery and database commits: sub-millisecond when healthy, seconds when not.
FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


class _ReadCounters(Collector):
    """Counters whose totals a component already keeps (``writer.batches``,
    ``node.forwarded``...): read at each scrape and exposed as counters (``_total``), so the
    hot path pays nothing for them."""

    def __init__(self) -> None:
        self._reads: list[tuple[str, str, Callable[[], float]]] = []

    def add(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._reads.append((name, documentation, read))

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, documentation, read in self._reads:
            yield CounterMetricFamily(name, documentation, value=read())

    def describe(self) -> Iterator[CounterMetricFamily]:
        for name, documentation, _ in self._reads:
            yield CounterMetricFamily(name, documentation)


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
            "Phases of a turn's time to first token (actors/generation_timing.py names them)",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self._phase_children: dict[str, Any] = {}
        self.gc_pauses = Histogram(
            "cero_gc_pause_seconds",
            "Garbage collections of a served process (the event loop waits for each), by "
            "generation (server/ops/gc_tuning.py)",
            ["generation"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        Gauge(
            "cero_gc_frozen_objects",
            "Objects frozen at start-up (skipped by every collection; 0 before it)",
            registry=registry,
        ).set_function(lambda: float(gc.get_freeze_count()))
        self._counted = _ReadCounters()
        registry.register(self._counted)
        # -- the operator's view of turns (README, "Metrics") ----------------------------
        self.ttft = Histogram(
            "cero_time_to_first_token_seconds",
            "POST /api/chat: the request's arrival until its first token is written, by "
            "response format (the model's own delay included)",
            ["transport"],
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        self.model_first_event = Histogram(
            "cero_model_first_event_seconds",
            "A model stream asked for until its first event arrived, by provider",
            ["provider"],
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        self.model_stream = Histogram(
            "cero_model_stream_seconds",
            "A model stream asked for until it ended (finished, failed or stopped), by provider",
            ["provider"],
            buckets=STREAM_BUCKETS,
            registry=registry,
        )
        self.generations = Counter(
            "cero_generations",
            "Generations ended, by outcome (complete, cancelled, error, interrupted) and error "
            "code",
            ["outcome", "code"],
            registry=registry,
        )
        self.finish_retries = Counter(
            "cero_db_finish_retries",
            "Terminal states whose commit failed and was retried (CERO_DB_COMMIT_TIMEOUT)",
            registry=registry,
        )
        self.delivery_lag = Histogram(
            "cero_delivery_lag_seconds",
            "Event appended to the log until written to a subscriber's socket: direct (the "
            "pass's coalesced write, once per pass) or queued (a pump's batch, its oldest)",
            ["path"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.lag_direct = self.delivery_lag.labels("direct").observe
        self.lag_queued = self.delivery_lag.labels("queued").observe
        self.slow_resets = Counter(
            "cero_slow_consumer_resets",
            "Streams sent a reset because they fell too far behind, by transport",
            ["transport"],
            registry=registry,
        )
        self.db_write_seconds = Histogram(
            "cero_db_write_seconds",
            "Batch writer transactions (turn starts, flushes, terminal states), committed or not",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.db_write_failures = Counter(
            "cero_db_write_failures",
            "Batch writer transactions that failed (a failed batch is retried op by op)",
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "cero_flush_seconds",
            "Flushes of streaming answers' partial text (one per CERO_FLUSH_INTERVAL)",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.flush_failures = Counter(
            "cero_flush_failures",
            "Flushes that failed (retried at the next interval)",
            registry=registry,
        )
        for transport in ("sse", "ndjson"):
            self.ttft.labels(transport)
            self.slow_resets.labels(transport)
        self.ttft.labels("ws")
        for outcome in ("complete", "cancelled"):
            self.generations.labels(outcome, "")

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

    def limit_refusals_by(self, limit: str) -> None:
        self.limit_refusals.labels(limit).inc()

    # -- actors.telemetry.GenerationTelemetry ---------------------------------------------

    def model_first_event_seen(self, provider: str, seconds: float) -> None:
        self.model_first_event.labels(provider).observe(seconds)

    def model_stream_ended(self, provider: str, seconds: float) -> None:
        self.model_stream.labels(provider).observe(seconds)

    def generation_ended(self, outcome: str, code: str) -> None:
        self.generations.labels(outcome, code).inc()

    def finish_retried(self) -> None:
        self.finish_retries.inc()

    # -- hooks of the writers -----------------------------------------------------------

    def observe_db_write(self, seconds: float, ok: bool) -> None:
        self.db_write_seconds.observe(seconds)
        if not ok:
            self.db_write_failures.inc()

    def observe_flush(self, seconds: float, ok: bool) -> None:
        self.flush_seconds.observe(seconds)
        if not ok:
            self.flush_failures.inc()

    def observe_phase(self, phase: str, seconds: float) -> None:
        child = self._phase_children.get(phase)
        if child is None:
            child = self._phase_children[phase] = self.turn_phases.labels(phase)
        child.observe(seconds)

    def turn_timing(self, request: web.Request) -> GenerationTiming:
        """A turn's clock, started when ``request`` reached the middlewares."""
        return GenerationTiming(self.observe_phase, request.get(REQUEST_STARTED))

    def turn_timing_from(self, started: float, *, transport: str) -> GenerationTiming:
        """A turn's clock for a command on an open socket (the WebSocket's ``send``), which
        observes ``cero_time_to_first_token_seconds{transport}`` itself when its first token
        is in the log: the socket writes it within that loop pass."""
        timing = GenerationTiming(self.observe_phase, started)
        timing.on_first_token = self.ttft.labels(transport).observe
        return timing

    def bind_admission(self, admission: AdmissionReadings) -> None:
        for name, text, read in (
            (
                "cero_event_loop_lag_seconds",
                "Worst event-loop lag in the last second",
                lambda: admission.lag,
            ),
            (
                "cero_process_cpu_ratio",
                "CPU seconds this process used per second in the last second (1 = a core)",
                lambda: admission.cpu,
            ),
            (
                "cero_admission_running",
                "Generations running (or admitted and starting) in this process",
                lambda: admission.running,
            ),
            (
                "cero_admission_waiting",
                "Starts waiting for admission now",
                lambda: admission.queued,
            ),
            (
                "cero_admission_floor",
                "Below this many running generations a start is never refused",
                lambda: admission.limits.floor,
            ),
        ):
            self._reading(name, text, read)
        self._counted.add(
            "cero_overloaded_refusals",
            "Sends refused with 503 overloaded (queued past CERO_ADMISSION_WAIT or queue full)",
            lambda: admission.refused,
        )
        self._counted.add(
            "cero_admission_queued",
            "Starts that waited in the admission queue",
            lambda: admission.queued_total,
        )

    def bind_cluster(self, node: ClusterProcess) -> None:
        """Cluster mode: leases, the shared log, forwarded commands, the relay's lag."""
        self._reading(
            "cero_cluster_leases_held",
            "Conversation leases this process holds",
            lambda: len(node.held),
        )
        for name, text, read in (
            ("cero_cluster_leases_taken", "Conversation leases taken", "leases_taken"),
            ("cero_cluster_leases_lost", "Leases lost (renewal refused)", "leases_lost"),
            ("cero_cluster_forwarded_commands", "Commands forwarded to an owner", "forwarded"),
            ("cero_cluster_log_appends", "Events appended to Redis streams", "appended"),
            ("cero_cluster_log_pipelines", "Pipelines sent by the log writer", "pipelines"),
            ("cero_cluster_relayed_events", "Events the relay read from Redis", "relayed"),
            ("cero_cluster_relay_reads", "Blocking reads (XREAD) the relay made", "relay_reads"),
        ):

            def value(attribute: str = read) -> float:
                return float(getattr(node, attribute))

            self._counted.add(name, text, value)
        relay_lag = Histogram(
            "cero_cluster_relay_lag_seconds",
            "The owner's append until this process's relay read it (per stream per read; "
            "millisecond resolution, clocks of two hosts)",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        node.relay.on_lag = relay_lag.observe
        # Answers whose owner died are ended by the next owner, not by a generation.
        node.on_orphans = self.generations.labels("interrupted", "owner_lost").inc

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

    def bind_writer(self, writer: WriterHooks, janitor: Pending) -> None:
        writer.on_phase = self.observe_phase
        writer.on_commit = self.observe_db_write
        self._reading(
            "cero_db_write_queue",
            "Hot-path writes (turn starts, flushes, terminal states) waiting for the writer",
            lambda: writer.pending,
        )
        self._counted.add(
            "cero_db_write_batches",
            "Transactions committed by the batch writer",
            lambda: writer.batches,
        )
        self._counted.add(
            "cero_db_write_ops",
            "Writes committed by the batch writer (ops / batches = batch size)",
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


def exposition(metrics: Metrics) -> web.Response:
    """The Prometheus text of every metric."""
    response = web.Response(body=generate_latest(metrics.registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def metrics_view(request: web.Request) -> web.Response:
    """``GET /metrics`` on the API's own listener: only for a scraper holding
    ``CERO_METRICS_TOKEN`` (``Authorization: Bearer``, compared in constant time). The
    metrics show what sizes and watches an attack (descriptor headroom, limit refusals,
    loop lag), and a scrape costs tens of milliseconds: no anonymous client gets them.
    Without a token the path answers 404 (the metrics listener,
    ``CERO_METRICS_ADDRESS``, is then the way to scrape)."""
    token = request.app[SETTINGS].metrics_token
    if token is None:
        raise ApiError(404, "not_found", "Not found")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(401, "unauthorized", "Unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return exposition(request.app[METRICS])
