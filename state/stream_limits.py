"""Open live connections per user and per client address (WebSockets and SSE event
streams): each holds a socket, a subscription and a heartbeat for as long as the client
likes, so one account (or one address, signed in as many accounts) could hold thousands.

A :class:`StreamSlot` is taken before the stream starts and released exactly once when it
ends, however it ends (:meth:`StreamSlot.release` is idempotent). :class:`MemoryStreamLimits`
counts in this process; :class:`cluster.state.stream_limits.RedisStreamLimits` counts across
every process (slots renewed while held, so a process that dies frees its slots within a
TTL). A refusal raises :class:`state.errors.Refused`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from state.counting import InFlight
from state.errors import Refused

#: What a refused connection is told to wait: streams end when their clients leave.
STREAM_RETRY_AFTER_S = 5


class _Releaser(Protocol):
    def _release(self, slot: StreamSlot) -> None: ...


class StreamSlot:
    """One open stream, counted against its user and its address until :meth:`release`."""

    __slots__ = ("_limits", "held", "ip", "token", "user_id")

    def __init__(self, limits: _Releaser, user_id: str, ip: str, token: str | None = None) -> None:
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


class StreamLimits(Protocol):
    """Open streams per user and per address."""

    async def open(self, user_id: str, ip: str) -> StreamSlot:
        """A slot for one more stream, or :class:`Refused`."""
        ...

    def open_for_user(self, user_id: str) -> int:
        """Streams ``user_id`` holds open (in this process)."""
        ...

    async def close(self) -> None:
        """Wait for what is being given back in the background (slots released)."""
        ...


class StreamLimitRefusals:
    """The caps and the refusals both implementations give, in the same words."""

    def __init__(
        self, *, per_user: int, per_ip: int, on_refusal: Callable[[str], None] | None = None
    ) -> None:
        self.per_user = per_user
        self.per_ip = per_ip
        self._on_refusal = on_refusal  # metrics: refusals by limit

    def _refuse(self, limit: str, message: str) -> Refused:
        if self._on_refusal is not None:
            self._on_refusal(limit)
        return Refused(limit, message, STREAM_RETRY_AFTER_S)

    def _refuse_user(self) -> Refused:
        return self._refuse(
            "streams_per_user",
            f"At most {self.per_user} live connections (WebSocket or event stream) per "
            "user; close one first",
        )

    def _refuse_ip(self) -> Refused:
        return self._refuse(
            "streams_per_ip",
            f"At most {self.per_ip} live connections (WebSocket or event stream) per "
            "client address; close one first",
        )


class MemoryStreamLimits(StreamLimitRefusals):
    """:class:`StreamLimits` in this process's memory."""

    def __init__(
        self, *, per_user: int, per_ip: int, on_refusal: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(per_user=per_user, per_ip=per_ip, on_refusal=on_refusal)
        self._users = InFlight()
        self._ips = InFlight()

    async def open(self, user_id: str, ip: str) -> StreamSlot:
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
        return self._users[user_id]

    async def close(self) -> None:
        """Nothing is given back in the background here."""
