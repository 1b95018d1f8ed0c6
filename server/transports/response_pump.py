"""One subscription written to one HTTP response: the pump shared by SSE and NDJSON.

Until the response has sent its first bytes the feed is not ``ready`` and the hub queues;
afterwards a subscriber whose socket keeps up is written to directly by the publisher
(``direct``), and a lagging one is drained here, in order, with backpressure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from actors.api import Event, SubscribeSpec, Subscription
from server.transports.wire import RawWriter

Render = Callable[[Event], bytes | None]
StopWhen = Callable[[Event], bool]


class ResponsePump:
    def __init__(
        self,
        writer: RawWriter,
        render: Render,
        *,
        stop_when: StopWhen | None = None,
        ping: bytes | None = None,
        ping_interval: float = 15.0,
        use_direct: bool = True,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.writer = writer
        #: Metrics hook: a ``reset`` is written because this subscriber fell behind.
        self.on_reset = on_reset
        self.render = render
        self.stop_when = stop_when
        self.ping = ping
        self.ping_interval = ping_interval
        self.ready = False
        self.finished = False
        self.ended = False  # the session behind the response ended: write nothing more
        self.sub: Subscription | None = None
        self._wake = asyncio.Event()
        self._use_direct = use_direct

    def spec(self, *, max_events: int | None = None, max_bytes: int | None = None) -> SubscribeSpec:
        return SubscribeSpec(
            notify=self._wake.set,
            direct=self._direct if self._use_direct else None,
            max_events=max_events,
            max_bytes=max_bytes,
        )

    def _direct(self, event: Event) -> bool:
        if not self.ready or self.finished or not self.writer.writable():
            return False
        frame = self.render(event)
        if frame is not None:
            self.writer.write_soon(frame)
        if self.stop_when is not None and self.stop_when(event):
            self.finished = True
            self._wake.set()
        return True

    def session_ended(self) -> None:
        """The caller's session was revoked or expired: the response ends here."""
        self.ended = self.finished = True
        self._wake.set()

    def write_events(self, events: list[Event], *, live: bool = False) -> None:
        """Write ``events`` in one go; ``live``: they were queued while this subscriber
        lagged (not the replay), so the oldest one's wait is its delivery lag."""
        if live and events:
            metrics = self.writer.metrics
            published = events[0].published
            if metrics is not None and published:
                metrics.lag_queued(perf_counter() - published)
        frames = []
        for event in events:
            if event.type == "reset" and self.on_reset is not None:
                sub = self.sub
                if sub is not None and sub.overflowed:  # not a cursor that could not replay
                    self.on_reset()
            frame = self.render(event)
            if frame is not None:
                frames.append(frame)
            if self.stop_when is not None and self.stop_when(event):
                self.finished = True
                break
        if frames:
            self.writer.write(b"".join(frames))

    async def run(self, sub: Subscription, replay: bytes = b"") -> None:
        """Pump until the stop event, the hub closes, or the peer goes away; ``replay``
        (frames already taken from ``sub`` and rendered) goes out first."""
        self.sub = sub
        if self.ended:
            return
        try:
            await self._pump(sub, replay)
        finally:
            # Frames the publisher left for this pass go out before whatever the response
            # writes next (the end of its body).
            self.writer.flush()

    async def _pump(self, sub: Subscription, replay: bytes) -> None:
        self.ready = True
        if replay:
            self.writer.write(replay)
        self.write_events(sub.take())
        while not self.finished and not self.writer.closing:
            if sub.closed and not sub.pending():
                return
            try:
                # asyncio.timeout, not wait_for: no extra task per wakeup on the token path.
                async with asyncio.timeout(self.ping_interval):
                    await self._wake.wait()
            except TimeoutError:
                if self.ping is not None:
                    self.writer.write(self.ping)
                    await self.writer.drain()
                continue
            self._wake.clear()
            self.write_events(sub.take(), live=True)
            await self.writer.drain()
