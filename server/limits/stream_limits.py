"""Open live connections per user and per client address: WebSockets (``/api/ws``) and SSE
event streams (``/api/conversations/{id}/events``).

Each one holds a socket, a subscription and a heartbeat for as long as the client likes,
so one account (or one address, signed in as many accounts) could hold thousands. The
caps are ``CERO_MAX_STREAMS_PER_USER`` and ``CERO_MAX_STREAMS_PER_IP`` (by
:func:`server.limits.rate_limit.rate_key` of :func:`server.core.client_ip.client_ip`: IPv6
per /64, ``X-Forwarded-For`` only behind a trusted proxy). A connection past either gets
``429 rate_limited`` with ``Retry-After`` *before* the upgrade or the stream starts.

The response stream of ``POST /api/chat`` is not counted: it ends with its generation, and
the generation limits already bound it.

A :class:`StreamSlot` is taken before the stream starts and released exactly once when it
ends, however it ends (the handler's ``finally``; :meth:`StreamSlot.release` is
idempotent). In cluster mode :class:`server.shared_state.RedisStreamLimits` replaces
:class:`StreamLimits` (same ``async`` :meth:`StreamLimits.open`): the slots live in Redis as
the generation slots do, renewed while held, so a process that dies frees its slots within
a TTL.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from server.core.app_keys import METRICS, SETTINGS
from server.core.client_ip import client_ip
from server.core.errors import ApiError
from server.limits.rate_limit import InFlight, rate_key
from server.limits.user_limits import rate_limited

#: What a refused connection is told to wait: streams end when their clients leave.
STREAM_RETRY_AFTER_S = 5

STREAM_LIMITS: web.AppKey[StreamLimits] = web.AppKey("stream_limits")


class StreamSlot:
    """One open stream, counted against its user and its address until :meth:`release`."""

    __slots__ = ("_limits", "held", "ip", "token", "user_id")

    def __init__(
        self, limits: StreamLimits, user_id: str, ip: str, token: str | None = None
    ) -> None:
        self._limits = limits
        self.user_id = user_id
        self.ip = ip
        self.token = token  # cluster mode: the slot's id in Redis
        self.held = True

    def release(self) -> None:
        """Give the slot back; any further call is a no-op."""
        if self.held:
            self.held = False
            self._limits._release(self)


class StreamLimits:
    """Open streams per user and per address in this process's memory."""

    def __init__(
        self,
        *,
        per_user: int,
        per_ip: int,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.per_user = per_user
        self.per_ip = per_ip
        self._on_refusal = on_refusal
        self._users = InFlight()
        self._ips = InFlight()

    async def open(self, user_id: str, ip: str) -> StreamSlot:
        """A slot for one more stream, or ``429 rate_limited``."""
        if self._users[user_id] >= self.per_user:
            raise self._refuse_user()
        if self._ips[ip] >= self.per_ip:
            raise self._refuse_ip()
        self._users.add(user_id)
        self._ips.add(ip)
        return StreamSlot(self, user_id, ip)

    def _release(self, slot: StreamSlot) -> None:
        self._users.remove(slot.user_id)
        self._ips.remove(slot.ip)

    def open_for_user(self, user_id: str) -> int:
        """Streams ``user_id`` holds open (in this process)."""
        return self._users[user_id]

    def _refuse(self, limit: str, message: str) -> ApiError:
        if self._on_refusal is not None:
            self._on_refusal(limit)
        return rate_limited(message, STREAM_RETRY_AFTER_S)

    def _refuse_user(self) -> ApiError:
        return self._refuse(
            "streams_per_user",
            f"At most {self.per_user} live connections (WebSocket or event stream) per "
            "user; close one first",
        )

    def _refuse_ip(self) -> ApiError:
        return self._refuse(
            "streams_per_ip",
            f"At most {self.per_ip} live connections (WebSocket or event stream) per "
            "client address; close one first",
        )


async def open_stream(request: web.Request, user_id: str) -> StreamSlot:
    """The slot for the live connection ``request`` is about to start (or 429 / 503)."""
    return await request.app[STREAM_LIMITS].open(user_id, rate_key(client_ip(request)))


def setup(app: web.Application) -> None:
    """The in-memory limits (cluster mode replaces them in :mod:`server.shared_state`)."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    app[STREAM_LIMITS] = StreamLimits(
        per_user=settings.max_streams_per_user,
        per_ip=settings.max_streams_per_ip,
        on_refusal=metrics.limit_refusals_by,
    )
