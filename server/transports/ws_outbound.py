"""The way out of one WebSocket: frames written straight to the transport while it keeps
up, a pump for lagging subscriptions (their tokens merged by the hub), 4008 past their
bound, and nothing at all once a Close frame is queued (RFC 6455 §5.5.1).

The commands that arrive on the socket are :mod:`server.transports.ws`; the handshake's
authentication :mod:`server.transports.ws_auth`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Protocol

import orjson
from aiohttp import web

from actors.api import CHANNEL, Event, Subscription
from server.auth.current import CurrentUser
from server.ops.metrics import METRICS
from server.transports.replay_budget import ReplayBudget
from server.transports.wire import HIGH_WATER, RawWriter, ws_close_frame, ws_text_frame
from state.counting import SlidingWindow

#: The account channel's entry among a socket's subscriptions (no conversation id looks
#: like it).
ACCOUNT_KEY = "@account"


class Source(Protocol):
    """What a socket's subscription reads from: a conversation's actor, or the account
    channel."""

    async def unsubscribe(self, sub: Subscription) -> None: ...


SLOW_CONSUMER = 4008
SESSION_ENDED = 4001
SLOW_CLOSE_GRACE_S = 30.0


def ws_frame(event: Event) -> bytes:
    frame = event.frames.get("ws")
    if frame is None:
        frame = ws_text_frame(event.json)
        event.frames["ws"] = frame
    return frame


class Outbound:
    """One socket's state and its way out. Kept small: an idle authenticated socket costs
    only this object (the pump task with its wake-up event, the abuse window and the replay
    budget are created on first use)."""

    __slots__ = (
        "__weakref__",
        "app",
        "closer",
        "closing",
        "faults",
        "pump_task",
        "replay_budget",
        "subs",
        "user",
        "wake",
        "writer",
        "ws",
    )

    def __init__(self, request: web.Request, user: CurrentUser) -> None:
        self.app = request.app
        self.user = user
        self.writer = RawWriter(request)
        #: By conversation id, and the account channel under :data:`ACCOUNT_KEY`.
        self.subs: dict[str, tuple[Source, Subscription]] = {}
        #: Made with the pump (the first subscription): until then nothing waits on it.
        self.wake: asyncio.Event | None = None
        #: No more commands, no more frames: a Close frame is queued (or about to be).
        self.closing = False
        self.faults: SlidingWindow | None = None
        self.pump_task: asyncio.Task[None] | None = None
        #: Bytes of replay this socket may still be sent (made on its first replay).
        self.replay_budget: ReplayBudget | None = None
        self.ws: web.WebSocketResponse | None = None
        self.closer: asyncio.Task[bool] | None = None

    def stop_writing(self) -> None:
        """Called before any Close frame is queued (RFC 6455 §5.5.1): no data frame may
        follow it, from the publisher's direct path, the pump or a command's answer."""
        self.closing = True
        self.writer.shut_down()
        self._wake()

    def session_ended(self) -> None:
        """The session was revoked or expired: close with 4001 (a liveness watcher)."""
        if self.closing:
            return
        self.stop_writing()
        ws = self.ws
        if ws is not None:
            self.closer = asyncio.get_running_loop().create_task(
                ws.close(code=SESSION_ENDED, message=b"session ended")
            )

    # -- outbound ------------------------------------------------------------------------

    def send_json(self, data: dict[str, object]) -> None:
        self.writer.write(ws_text_frame(orjson.dumps(data)))

    def _direct(self, gate: list[bool]) -> Callable[[Event], bool]:
        """The publisher's fast path for one subscription: its frame joins this pass's
        write to the socket (:meth:`RawWriter.write_soon`).

        ``gate[0]`` opens once the subscription's replay (or ``subscribed``) went out, so
        nothing live can overtake it."""
        writer = self.writer
        transport = writer.transport
        if transport is None:
            return lambda event: False
        write_soon = writer.write_soon

        def direct(event: Event) -> bool:
            if (
                not gate[0]
                or writer.shut
                or transport.get_write_buffer_size() > HIGH_WATER
                or transport.is_closing()
            ):
                return False
            frame = event.frames.get("ws")
            if frame is None:
                frame = ws_frame(event)
            write_soon(frame)
            return True

        return direct

    def close_slow(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.app[METRICS].ws_closed_slow.inc()
        # Behind whatever is already buffered: the client sees every event it was sent,
        # then the close (and nothing after it), and resumes from its last cursor.
        self.writer.write_last(ws_close_frame(SLOW_CONSUMER, "slow consumer"))
        transport = self.writer.transport
        if transport is not None:
            transport.close()  # flushes first; a peer that never reads again is aborted
            asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE_S, transport.abort)
        self._wake()

    def notify(self) -> None:
        """Called by the hub inside ``append``: must not await, may close a laggard."""
        self._wake()
        if not self.closing:
            for _, sub in self.subs.values():
                if sub.overflowed:
                    self.close_slow()
                    break

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None:
            wake.set()

    def start_pump(self) -> None:
        """The task that writes what lagging subscriptions queued (once per socket)."""
        if self.pump_task is None:
            # Set: one first pass, for whatever a subscription queued (or its closing)
            # before there was a pump to wake.
            self.wake = asyncio.Event()
            self.wake.set()
            self.pump_task = asyncio.get_running_loop().create_task(self.pump(self.wake))

    async def pump(self, wake: asyncio.Event) -> None:
        while not self.closing and not self.writer.closing:
            await wake.wait()
            wake.clear()
            frames: list[bytes] = []
            oldest = 0.0  # the oldest event this wakeup writes: its delivery lag
            # Only adopted subscriptions are in ``subs`` (their replay went out first).
            for conversation_id, (_, sub) in list(self.subs.items()):
                if sub.overflowed:
                    self.close_slow()
                    return
                events = sub.take()
                if events:
                    published = events[0].published
                    if published and (not oldest or published < oldest):
                        oldest = published
                for event in events:
                    frames.append(ws_frame(event))
                if sub.closed and not sub.pending():
                    # The conversation was deleted, or its actor stopped or crashed.
                    self.subs.pop(conversation_id, None)
                    scope = (
                        ("channel", CHANNEL)
                        if conversation_id == ACCOUNT_KEY
                        else ("conversationId", conversation_id)
                    )
                    frames.append(
                        self.frame({"type": "unsubscribed", "reason": "closed", scope[0]: scope[1]})
                    )
            metrics = self.writer.metrics
            if oldest and metrics is not None:
                metrics.lag_queued(perf_counter() - oldest)
            if frames:
                self.writer.write(b"".join(frames))
                try:
                    await self.writer.drain()
                except ConnectionError:
                    return

    @staticmethod
    def frame(data: dict[str, object]) -> bytes:
        return ws_text_frame(orjson.dumps(data))
