"""Writing pre-built frames straight to a connection's transport.

The fan-out hot path (STACK_NOTES.md): each event is serialized once and its frame bytes
cached on the event; a subscriber whose socket is not backed up gets them from inside the
publisher's call (no task switch, no await); only a lagging subscriber queues, and its own
pump drains that queue.

Frames published to a socket during one pass of the event loop leave in one
``transport.write`` at the end of that pass (:meth:`RawWriter.write_soon`): a model stream
that is ahead of delivery publishes several tokens per pass, and one send per subscriber
per pass instead of one per token is most of what fan-out costs (measured in
bench/README.md, "Fan-out efficiency"). A token published alone still leaves in the same
pass, microseconds later. Every other write (:meth:`RawWriter.write`, a Close frame, a
drain) sends what is pending first, so the order on the wire is the order of the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from time import perf_counter
from typing import Any

import structlog
from aiohttp import web

from server.ops.metrics import METRICS, Metrics

log = structlog.get_logger(__name__)

#: Above this many bytes waiting in the transport the subscriber counts as lagging.
HIGH_WATER = 256 * 1024
#: A vanished peer (no FIN) is dropped once sent data stays unacknowledged this long.
#: With an SSE ping every 15 s that is at most 15 + 25 = 40 s after it vanished, inside the
#: contract's 45 s for presence (WebSocket peers are also caught by the 20 + 20 s heartbeat).
TCP_USER_TIMEOUT_MS = 25_000


class _PassFlush:
    """The writers with frames pending in this pass of one event loop; flushed together by
    one callback at the end of the pass."""

    __slots__ = ("loop", "scheduled", "since", "writers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writers: list[RawWriter] = []
        self.scheduled = False
        #: When this pass's first frame was held: the pass's delivery lag is measured from
        #: it, once per pass (never per socket or per frame: the fan-out path is hot).
        self.since = 0.0

    def add(self, writer: RawWriter) -> None:
        self.writers.append(writer)
        if not self.scheduled:
            self.scheduled = True
            self.since = perf_counter()
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        writers, self.writers = self.writers, []
        metrics = writers[0].metrics if writers else None
        if metrics is not None:
            metrics.lag_direct(perf_counter() - self.since)
        for writer in writers:
            try:
                writer.flush()
            except Exception:  # one connection's failure must not hold back the others
                log.exception("pass_flush_failed")


_PASSES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PassFlush] = (
    weakref.WeakKeyDictionary()
)


def _pass_flush() -> _PassFlush:
    loop = asyncio.get_running_loop()
    flush = _PASSES.get(loop)
    if flush is None:
        flush = _PASSES[loop] = _PassFlush(loop)
    return flush


class RawWriter:
    """Whole frames to the transport of one request; never awaits unless asked to drain."""

    __slots__ = ("_pass", "_pending", "_protocol", "metrics", "shut", "transport")

    def __init__(self, request: web.Request) -> None:
        self.transport: asyncio.Transport | None = request.transport
        self._protocol: Any = request.protocol
        #: The app's metrics (``cero_delivery_lag_seconds``); absent for a bare app.
        app = getattr(request, "app", None)
        self.metrics: Metrics | None = app.get(METRICS) if app is not None else None
        #: Set once nothing more may be written (a WebSocket Close frame is queued, RFC
        #: 6455 §5.5.1): from then on every write is dropped, whoever makes it.
        self.shut = False
        #: Frames of this pass not yet handed to the transport (``write_soon``).
        self._pending: list[bytes] = []
        self._pass = _pass_flush()

    @property
    def closing(self) -> bool:
        transport = self.transport
        return self.shut or transport is None or transport.is_closing()

    def writable(self) -> bool:
        transport = self.transport
        return (
            not self.shut
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= HIGH_WATER
        )

    def write_soon(self, data: bytes) -> None:
        """Hand ``data`` to the transport at the end of this pass of the event loop,
        together with every other frame written to this connection meanwhile."""
        pending = self._pending
        pending.append(data)
        if len(pending) == 1:
            self._pass.add(self)

    def flush(self) -> None:
        """Send what ``write_soon`` holds now (dropped if nothing may be written)."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        # Cleared, not replaced: a new list per connection per pass is a new GC-tracked
        # object per subscriber per token at paced rates.
        pending.clear()
        transport = self.transport
        if not self.shut and transport is not None and not transport.is_closing():
            transport.write(data)

    def write(self, data: bytes) -> None:
        """Write ``data`` now, behind anything pending."""
        if self._pending:
            self.flush()
        transport = self.transport
        if not self.shut and transport is not None and not transport.is_closing():
            transport.write(data)

    def write_last(self, data: bytes) -> None:
        """Write ``data`` (a Close frame) and nothing ever after it."""
        self.write(data)
        self.shut = True

    def shut_down(self) -> None:
        """Nothing more may be written: send what is pending, then refuse every write
        (called right before a WebSocket Close frame is queued by aiohttp)."""
        self.flush()
        self.shut = True

    async def drain(self) -> None:
        """Wait until the transport accepts more (aiohttp's own flow control)."""
        self.flush()
        if self.closing:
            raise ConnectionResetError("connection closed")
        helper = getattr(self._protocol, "_drain_helper", None)
        if helper is not None:
            await helper()

    def set_user_timeout(self) -> None:
        """Let the kernel drop a peer that stopped acknowledging (vanished client)."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


def send_headers(response: web.StreamResponse) -> None:
    """Flush the headers aiohttp buffers after ``prepare()`` (it waits for a first body
    write), so that later frames can go straight to the transport behind them."""
    payload_writer = getattr(response, "_payload_writer", None)
    send = getattr(payload_writer, "send_headers", None)
    if send is not None:
        send()


def chunk(data: bytes) -> bytes:
    """HTTP/1.1 chunked framing of one body piece."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def ws_text_frame(payload: bytes) -> bytes:
    """An unmasked (server → client) WebSocket text frame, FIN set."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def ws_close_frame(code: int, reason: str = "") -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:120]
    return bytes((0x88, len(payload))) + payload
