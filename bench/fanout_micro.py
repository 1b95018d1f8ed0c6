"""The Python cost of one fan-out delivery, without sockets: ``EventLog.append`` to N
subscribers whose WebSocket direct path (the same checks as ``Outbound._direct``) either
writes each frame at once or holds it for the end of the pass (``RawWriter.write_soon``).

The transports are stubs whose methods are C builtins (``list.append``, ``int``,
``bool``), so what is timed is our Python: the hub's loop, the direct path's checks,
holding and flushing; the send syscall itself is not included (bench/README.md, "Fan-out
efficiency", has the whole server's figures).

Run: ``python -m bench.fanout_micro``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from actors.event_log import Event, EventLog
from server.transports.wire import HIGH_WATER, RawWriter
from server.transports.ws_outbound import ws_frame

TEXT = "⟨1764470000.123456⟩ "


class _StubTransport:
    __slots__ = ("get_write_buffer_size", "is_closing", "sink", "write")

    def __init__(self) -> None:
        self.sink: list[bytes] = []
        self.write = self.sink.append
        self.get_write_buffer_size = int
        self.is_closing = bool


class _StubRequest:
    def __init__(self, transport: _StubTransport) -> None:
        self.transport = transport
        self.protocol = None


def _direct(writer: RawWriter, held: bool) -> Callable[[Event], bool]:
    transport: Any = writer.transport
    write_soon = writer.write_soon

    def direct(event: Event) -> bool:
        if writer.shut or transport.get_write_buffer_size() > HIGH_WATER or transport.is_closing():
            return False
        frame = event.frames.get("ws")
        if frame is None:
            frame = ws_frame(event)
        if held:
            write_soon(frame)
        else:
            transport.write(frame)
        return True

    return direct


async def measure(subscribers: int, per_pass: int, held: bool, tokens: int) -> float:
    """µs of Python per delivery."""
    hub = EventLog("c" * 24)
    transports = []
    for _ in range(subscribers):
        transport = _StubTransport()
        transports.append(transport)
        writer = RawWriter(_StubRequest(transport))  # type: ignore[arg-type]
        hub.subscribe(None, notify=lambda: None, direct=_direct(writer, held))
    started = time.perf_counter()
    for _ in range(tokens // per_pass):
        for _ in range(per_pass):
            hub.append("token", {"messageId": "m" * 24, "text": TEXT})
        await asyncio.sleep(0)  # the pass ends: held frames are flushed
        for transport in transports:
            transport.sink.clear()
    elapsed = time.perf_counter() - started
    return 1e6 * elapsed / (tokens // per_pass * per_pass) / subscribers


async def main() -> None:
    for subscribers, per_pass, tokens in ((1000, 1, 2000), (100, 1, 20000), (100, 8, 20000)):
        now = await measure(subscribers, per_pass, False, tokens)
        held = await measure(subscribers, per_pass, True, tokens)
        print(
            f"{subscribers} subscribers, {per_pass} token(s) per pass: written at once "
            f"{now:.3f} µs, held for the pass {held:.3f} µs per delivery"
        )


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
