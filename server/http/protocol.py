"""The HTTP/1.1 connection layer: limits aiohttp's parser applies before any middleware.

Everything here hooks aiohttp below its public API, and nothing else in the project does:
a :class:`GuardedRequestHandler` (a subclass of ``aiohttp.web_protocol.RequestHandler``)
made by a :class:`GuardedServer` (a ``web.Server``) that :class:`CeroRunner` (an
``AppRunner``) puts in place of aiohttp's own. The hooks used — ``RequestHandler
.handle_error`` (called for parser errors and unhandled handler errors),
``connection_made`` / ``data_received`` / ``connection_lost``, the private
``_waiter``, ``_request_count``, ``_request_in_progress``, ``_messages``,
``_current_request``, ``_loop``, ``_kwargs``, and the request payload's ``StreamReader``
(``total_bytes``, ``is_eof``, ``feed_eof``, ``set_exception``) — are checked by
``tests/server/limits/test_limits.py::test_aiohttp_hooks_still_exist``, which fails loudly if an
aiohttp upgrade moves them.

What it adds:

- parser errors answer JSON in the contract's shape with an ``X-Request-ID``, never echoing
  the offending bytes, and never logging them: ``414`` for a request line over
  ``CERO_MAX_REQUEST_LINE``, ``431`` for a header field over ``CERO_MAX_HEADER_SIZE``, more
  than ``CERO_MAX_HEADERS`` headers or a head over ``CERO_MAX_HEAD_BYTES``, ``400``
  otherwise;
- a head timeout (``CERO_HEADER_TIMEOUT``): a new connection must send a complete request
  head within it (a silent one is closed, a slow one answered ``408``), and so must a kept
  alive one once it starts sending the next request; idle keep-alive is
  ``CERO_KEEPALIVE_TIMEOUT`` (aiohttp's own timer);
- a body deadline for every route: a request body must arrive whole within
  ``CERO_BODY_TIMEOUT`` of the end of its head, and at ``CERO_MIN_BODY_RATE`` bytes a second
  on average after a grace of ``BODY_RATE_GRACE_S`` (a body of ``n`` bytes is given
  ``grace + n / rate``, never more than the deadline). Past it this layer answers ``408
  request_timeout`` itself (whether or not the handler is reading), half-closes, and the
  handler's next read raises :class:`server.core.errors.BodyTimeout`; a body still arriving
  after the handler answered is simply cut off. Requests without a body (WebSocket
  upgrades, event streams) are never watched;
- connection caps through :class:`server.limits.connection_guard.ConnectionGuard`.

Why one module of ~500 lines: the handler, the server that makes it and the runner that
installs it are one chain of aiohttp subclasses, and keeping every hook below aiohttp's
public API in this one file is what lets one test guard them all; the counting itself
lives in :mod:`server.limits.connection_guard`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from server.core.config import Settings
from server.core.errors import BodyTimeout, error_body, error_response, with_retry_after
from server.http.security_headers import EVERY_RESPONSE
from server.limits.connection_guard import Admission, ConnectionGuard, exempt_networks
from server.ops.metrics import METRICS

log = structlog.get_logger(__name__)

# Probe paths a reserved (over-capacity) connection may still use.
PROBE_PATHS = frozenset({"/", "/healthz", "/readyz"})
# A reserved connection must send its request head within this (or the head timeout).
RESERVE_HEADER_TIMEOUT_S = 2.0
# A refused connection is half-closed and kept this long so the client reads its answer
# (closing with its request unread would reset the connection and lose the answer).
REFUSED_LINGER_S = 1.0
# A body's first bytes may take this long before the minimum rate applies.
BODY_RATE_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    header_timeout: float
    max_head_bytes: int
    max_line_size: int
    max_field_size: int
    body_timeout: float
    min_body_rate: int
    #: ``POST /api/attachments`` and ``POST /api/import`` (which carries attachments): an
    #: upload's body may take this long instead (``CERO_ATTACHMENT_BODY_TIMEOUT``); the
    #: minimum rate applies as to any body.
    upload_body_timeout: float = 300.0


#: The paths whose bodies are uploads (:attr:`ProtocolLimits.upload_body_timeout`).
UPLOAD_PATHS = frozenset({"/api/attachments", "/api/import"})


def _request_id() -> str:
    return secrets.token_hex(8)


def raw_json_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
) -> bytes:
    """A complete ``Connection: close`` answer written straight to the transport, for
    connections no request object exists on (or whose handler no longer may answer); the
    body has the contract's shape for ``path`` (OAuth-style under ``/api/auth/``)."""
    body = orjson.dumps(with_retry_after(error_body(path, status, code, message), status, headers))
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        f"X-Request-ID: {_request_id()}",
        *(f"{name}: {value}" for name, value in EVERY_RESPONSE.items()),
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class ThrottledLog:
    """One warning a second at most under a flood, with how many events it stands for."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.count = 0
        self.since = 0.0

    def note(self, **fields: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.since >= 1.0:
            log.warning(self.event, count=self.count, **fields)
            self.count = 0
            self.since = now


_refusals = ThrottledLog("connections_refused")
_slow_bodies = ThrottledLog("slow_bodies_closed")


def _log_refusal(admission: Admission, guard: ConnectionGuard) -> None:
    _refusals.note(last_reason=admission.value, open=guard.total, reserved=guard.reserved)


def classify(
    exc: BaseException | None, status: int, limits: ProtocolLimits
) -> tuple[int, str, str]:
    """``(status, code, message)`` for an error aiohttp hands to ``handle_error``; the
    message never contains the request's bytes."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == limits.max_line_size:
            return 414, "uri_too_long", "Request line too long"
        return 431, "header_too_large", "Request header field too large"
    if isinstance(exc, HttpProcessingError):
        if "too many headers" in (exc.message or "").lower():
            return 431, "too_many_headers", "Too many request headers"
        return 400, "bad_request", "Malformed HTTP request"
    if status == 504:
        return 504, "timeout", "Request handler timed out"
    if status >= 500:
        return 500, "internal", "Internal server error"
    return status, "bad_request", "Malformed HTTP request"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with JSON parser errors, a head timeout and caps."""

    def __init__(
        self,
        manager: web.Server,
        *,
        guard: ConnectionGuard,
        limits: ProtocolLimits,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.limits = limits
        self.admission = Admission.ADMIT
        self.address = ""
        self._counted = False
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._head_bytes = 0
        self._linger: asyncio.TimerHandle | None = None
        self._discarding = False
        # The request body being received (its head is complete, its end is not).
        self._body: StreamReader | None = None
        self._body_since = 0.0
        self._body_timeout = limits.body_timeout
        self._body_timer: asyncio.TimerHandle | None = None

    @property
    def over_capacity(self) -> bool:
        """Admitted on a reserved slot: answers probes only, then closes."""
        return self.admission is Admission.RESERVE

    # -- admission -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.admission = self.guard.admit(self.address)
        if self.admission in (Admission.REFUSE_IP, Admission.REFUSE_FULL):
            self._refuse(transport)
            return
        self._counted = True
        super().connection_made(transport)
        self._start_head_timer()

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        self._refused = True
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.admission is Admission.REFUSE_IP:
            answer = raw_json_response(
                429,
                "too_many_connections",
                "Too many open connections from your address",
                {"Retry-After": "1"},
            )
        else:
            answer = raw_json_response(
                503, "over_capacity", "Server at connection capacity", {"Retry-After": "1"}
            )
        _log_refusal(self.admission, self.guard)
        if self.guard.on_refusal is not None:
            limit = "connections_per_ip" if self.admission is Admission.REFUSE_IP else "connections"
            self.guard.on_refusal(limit)
        transport.write(answer)
        if self.guard.lingering < self.guard.reserve and transport.can_write_eof():
            self.guard.lingering += 1
            transport.write_eof()
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(REFUSED_LINGER_S, transport.close)
        else:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        self._stop_body_watch()
        if self._discarding and self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._refused:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
                self.guard.lingering -= 1
            return
        if self._counted:
            self._counted = False
            self.guard.release(self.address, self.admission)
        super().connection_lost(exc)

    # -- the request head ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused or self._discarding:
            return  # read and dropped: the answer is already on its way
        before = self._request_count
        timing = self._head_timer is not None
        super().data_received(data)
        if self._request_count != before:
            self._cancel_head_timer()  # a head is complete (or answered as an error)
            self._head_bytes = 0
            self._head_started = False
            self._watch_body()
            return
        if self._body is not None:
            if self._body.is_eof():
                self._stop_body_watch()  # the body is complete
            return
        if not data or not (timing or self._idle()):
            return
        self._head_started = True
        self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_head_bytes:
            log.warning("http_head_rejected", status=431, code="headers_too_large")
            self._abort(431, "headers_too_large", "Request headers too large")
            return
        if self._head_timer is None:
            self._start_head_timer()

    def _idle(self) -> bool:
        """Waiting for the next request: nothing queued and no handler running."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._request_in_progress

    def _start_head_timer(self) -> None:
        timeout = self.limits.header_timeout
        if self.over_capacity:
            timeout = min(timeout, RESERVE_HEADER_TIMEOUT_S)
        self._head_timer = self._loop.call_later(timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._request_in_progress or self._messages:
            return
        if self._head_started:
            log.warning("http_head_rejected", status=408, code="request_timeout")
            self._abort(408, "request_timeout", "Request head not received in time")
        else:
            log.debug("connection_idle_closed")
            self.force_close()

    def _abort(self, status: int, code: str, message: str, *, path: str = "") -> None:
        """Answer without a request object (the head never completed, or the handler may no
        longer answer) and close, after reading what is still in flight for a moment (an
        unread close would reset the connection and the client would lose the answer)."""
        self._cancel_head_timer()
        transport = self.transport
        if transport is None:
            return
        self._discarding = True
        transport.write(raw_json_response(status, code, message, path=path))
        self.close()  # the request loop stops; the transport is ours to close
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = self._loop.call_later(REFUSED_LINGER_S, transport.close)
        else:
            transport.close()

    # -- the request body ------------------------------------------------------------------

    def _watch_body(self) -> None:
        """Start the body deadline if the newest request's body has not all arrived (only
        the last of several pipelined requests can be incomplete)."""
        self._stop_body_watch()
        if not self._messages:
            return
        message, payload = self._messages[-1]
        if payload.is_eof():  # no body (GET, WebSocket upgrade), or all of it is here
            return
        upload = getattr(message, "path", "").partition("?")[0] in UPLOAD_PATHS
        limits = self.limits
        self._body_timeout = limits.upload_body_timeout if upload else limits.body_timeout
        self._body = payload
        self._body_since = self._loop.time()
        self._schedule_body_check(payload)

    def _body_allowance(self, payload: StreamReader) -> float:
        """Seconds from the end of the head the body may take, given what arrived so far."""
        allowed = self._body_timeout
        if self.limits.min_body_rate > 0:
            earned = BODY_RATE_GRACE_S + payload.total_bytes / self.limits.min_body_rate
            allowed = min(allowed, earned)
        return allowed

    def _schedule_body_check(self, payload: StreamReader) -> None:
        due = self._body_since + self._body_allowance(payload)
        self._body_timer = self._loop.call_at(due, self._check_body)

    def _stop_body_watch(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body(self) -> None:
        """Due: the body is complete, still within its allowance (it earned more time
        since), or too slow."""
        self._body_timer = None
        payload = self._body
        if payload is None or payload.is_eof() or self.transport is None:
            self._body = None
            return
        if self._loop.time() - self._body_since < self._body_allowance(payload):
            self._schedule_body_check(payload)
            return
        self._body = None
        _slow_bodies.note(received=payload.total_bytes, open=self.guard.total)
        if self.guard.on_refusal is not None:
            self.guard.on_refusal("slow_body")
        request = self._current_request
        if request is None:
            # Answered already: aiohttp is reading the rest of the body to throw it away.
            # End that, and the connection.
            payload.feed_eof()
            self.force_close()
            return
        # The handler's next read raises, so it stops waiting for the body (the error
        # middleware renders it, for the metrics and the log; nobody reads that answer).
        payload.set_exception(BodyTimeout())
        payload.feed_eof()
        if _response_started(request):
            self.force_close()  # streaming its answer already: nothing can be added
            return
        # Answer here, whatever the handler does, then take the transport from it: its own
        # answer finds the connection gone (a quiet ConnectionError in aiohttp) while the
        # transport half-closes and lingers so the client reads the 408.
        self._abort(408, "request_timeout", "Request body not received in time", path=request.path)
        self.transport = None

    # -- aiohttp's error answers -----------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status, code, text = classify(exc, status, self.limits)
        if status >= 500:
            log.error("http_handler_error", status=status, error=type(exc).__name__)
        else:
            log.warning("http_parse_error", status=status, code=code, error=type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("Response already started; cannot send an error answer")
        response = web.Response(
            status=status,
            body=orjson.dumps({"error": text, "code": code}),
            content_type="application/json",
            # A BaseRequest runs no on_response_prepare hook: the security headers go here.
            headers={"X-Request-ID": _request_id(), **EVERY_RESPONSE},
        )
        response.force_close()
        return response


def _response_started(request: web.BaseRequest) -> bool:
    """Has the handler begun writing its response (headers buffered or bytes sent)?"""
    writer = request.writer
    return writer.output_size > 0 or bool(getattr(writer, "_headers_buf", None))


class GuardedServer(web.Server):
    """aiohttp's protocol factory, making :class:`GuardedRequestHandler` connections."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        guard: ConnectionGuard,
        limits: ProtocolLimits,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, guard=self.guard, limits=self.limits, loop=self._loop, **self._kwargs
        )


class CeroRunner(web.AppRunner):
    """An ``AppRunner`` serving through :class:`GuardedServer`."""

    def __init__(
        self,
        app: web.Application,
        *,
        guard: ConnectionGuard,
        limits: ProtocolLimits,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard
        self.limits = limits

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # app start-up, frozen: aiohttp's own Server
        return GuardedServer(
            base.request_handler,
            guard=self.guard,
            limits=self.limits,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )


def make_runner(
    app: web.Application, settings: Settings, *, max_connections: int, **kwargs: Any
) -> CeroRunner:
    """The runner ``cero-api serve`` uses, with every connection limit from ``settings``;
    ``max_connections`` is the total cap already clamped to the open-files limit."""
    guard = ConnectionGuard(
        max_total=max_connections,
        max_per_ip=settings.max_connections_per_ip,
        reserve=settings.connection_reserve,
        exempt=exempt_networks(settings.trusted_proxies),
    )
    metrics = app.get(METRICS)
    if metrics is not None:
        guard.on_refusal = metrics.limit_refusals_by
    field_size = settings.max_header_size
    # The parser says which limit a too-long line broke only by its number: keep the two
    # apart (one byte more for the request line at most) so 414 and 431 can be told apart.
    line_size = settings.max_request_line + (1 if settings.max_request_line == field_size else 0)
    limits = ProtocolLimits(
        header_timeout=settings.header_timeout,
        max_head_bytes=settings.max_head_bytes,
        max_line_size=line_size,
        max_field_size=field_size,
        body_timeout=settings.body_timeout,
        min_body_rate=settings.min_body_rate,
        upload_body_timeout=settings.attachment_body_timeout,
    )
    return CeroRunner(
        app,
        guard=guard,
        limits=limits,
        keepalive_timeout=settings.keepalive_timeout,
        max_line_size=line_size,
        max_field_size=field_size,
        max_headers=settings.max_headers,
        **kwargs,
    )


@web.middleware
def capacity_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """A connection on a reserved slot answers probes only, then closes.

    Not a coroutine: an ordinary request gets the handler's own awaitable (a tail call), so
    a long-lived one (a WebSocket) does not keep a frame of this middleware alive."""
    protocol = request.protocol
    if not (isinstance(protocol, GuardedRequestHandler) and protocol.over_capacity):
        return handler(request)
    return _reserved_slot(request, handler)


async def _reserved_slot(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PROBE_PATHS and request.method in ("GET", "HEAD"):
        response = await handler(request)
    else:
        response = error_response(
            request,
            503,
            "over_capacity",
            "Server at connection capacity",
            headers={"Retry-After": "1"},
        )
    response.force_close()
    return response
