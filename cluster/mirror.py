"""The conversation's hub in cluster mode: the owner's log, or a mirror of it.

Every process keeps one :class:`ClusterEventLog` per conversation it serves; transports
subscribe to it exactly as in one process (replay, merge for laggards, reset, 4008 are the
sans-I/O hub's). Two modes:

- **owner** (``sink`` set): this process holds the conversation's lease; the actor appends
  as always and each event is also handed to the node's log writer, which appends it to
  the Redis stream (fenced by the lease, batched per event-loop turn). Local subscribers
  get it at once, without a Redis hop.
- **mirror** (``sink`` is ``None``): only the relay writes, with :meth:`feed`, the events
  read from the stream in order; a duplicate is skipped and a gap or another epoch is
  reported so the node re-reads the stream (:meth:`rebase` when it cannot be bridged).
  Appends of anyone else (a non-owner's presence, the last words of an owner that lost
  its lease) are dropped: the stream is the one log.

It changes the hub only through the hooks :class:`actors.api.Hub` offers for this
(``append``, ``subscribe``, ``rebase`` and ``live_answer`` overridden, ``floor`` read),
never a private field of a hub or a subscription.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.api import RESERVED, TERMINAL, Cursor, Event, EventLog, Subscription

Sink = Callable[["ClusterEventLog", Event], None]


class ClusterEventLog(EventLog):
    __slots__ = (
        "_feeding",
        "_on_closed",
        "_on_presence",
        "_on_subscribe",
        "lease",
        "local_viewers",
        "running",
        "sink",
        "viewers_published",
    )

    def __init__(
        self,
        conversation_id: str,
        *,
        epoch: str | None,
        on_subscribe: Callable[[ClusterEventLog], None],
        on_presence: Callable[[ClusterEventLog], None],
        on_closed: Callable[[ClusterEventLog], None],
    ) -> None:
        super().__init__(conversation_id, epoch=epoch)
        #: Owner mode: where each appended event goes (the node's log writer).
        self.sink: Sink | None = None
        #: Owner mode: the lease value the appends are fenced with.
        self.lease: str | None = None
        #: The generation id of the last ``init`` not yet followed by a terminal event.
        self.running: str | None = None
        #: This process's viewers (its part of the cluster's ``presence`` count).
        self.local_viewers = 0
        #: The cluster-wide count this owner last published.
        self.viewers_published = 0
        self._feeding = False
        self._on_subscribe = on_subscribe
        self._on_presence = on_presence
        self._on_closed = on_closed

    def append(self, type: str, fields: dict[str, object]) -> Event:
        if type == "presence" and not self._feeding:
            # The local count is this process's share; the owner publishes the sum.
            viewers = fields.get("viewers")
            self.local_viewers = viewers if isinstance(viewers, int) else 0
            self._on_presence(self)
            return self._unlogged(type)
        if self.sink is None and not self._feeding:
            # Mirror mode: not ours to write.
            return self._unlogged(type)
        event = super().append(type, fields)
        if type == "presence":
            viewers = fields.get("viewers")
            self.viewers_published = viewers if isinstance(viewers, int) else 0
        elif type == "init":
            generation = fields.get("generationId")
            self.running = generation if isinstance(generation, str) else None
        elif type in TERMINAL and fields.get("generationId") == self.running:
            self.running = None
        sink = self.sink
        if sink is not None:
            sink(self, event)
        return event

    def _unlogged(self, type: str) -> Event:
        """What an append that is not part of the log returns."""
        data: dict[str, object] = {"type": type, "conversationId": self.conversation_id}
        return Event(type, self.last_seq, data, b"", self.cursor)

    def publish_viewers(self, total: int) -> None:
        """Owner mode: the ``presence`` event with every process's viewers summed."""
        if self.sink is None or self.closed or total == self.viewers_published:
            return
        self.viewers_published = total
        self._feeding = True
        try:
            self.append("presence", {"viewers": total})
        finally:
            self._feeding = False

    def feed(self, seq: int, data: dict[str, object]) -> bool:
        """One event read from the stream; ``False`` when it does not follow (a gap or
        another epoch): the caller re-reads the stream."""
        if data.get("type") == "_closed":
            if not self.closed:  # the conversation was deleted (through any process)
                self.close()
                self._on_closed(self)
            return True
        if self.sink is not None or self.closed or seq <= self.last_seq:
            return True  # owner mode, gone, or a duplicate
        if seq != self.last_seq + 1 or data.get("epoch") != self.epoch:
            return False
        kind = data.get("type")
        if not isinstance(kind, str):
            return True
        fields = {k: v for k, v in data.items() if k not in RESERVED}
        self._feeding = True
        try:
            self.append(kind, fields)
        finally:
            self._feeding = False
        return True

    def rebase(self, epoch: str, last_seq: int) -> None:
        """Follow another position of the log (lost, trimmed, or written by a rival while
        this process thought it owned it): the replay buffer goes and every subscriber
        gets ``reset`` (refetch over REST, live from ``last_seq + 1``)."""
        if epoch == self.epoch and last_seq == self.last_seq and not any(True for _ in self.held()):
            return
        self.running = None
        super().rebase(epoch, last_seq)  # every subscriber: reset, not its doing (no 4008)

    def subscribe(self, after: str | Cursor | None, **options: Any) -> Subscription:
        """:meth:`EventLog.subscribe` (same options); a mirror's first subscriber also makes the
        relay read its stream."""
        sub = super().subscribe(after, **options)
        if self.sink is None and not self.closed:
            self._on_subscribe(self)
        return sub

    def live_answer(self) -> tuple[str, str] | None:
        """``(message id, text so far)`` of the generation running in the log (a mirror
        has no generation object: the tokens since its ``init`` are in the buffer)."""
        if self.running is None:
            return None
        message_id: str | None = None
        parts: list[str] = []
        for event in self.held():
            if event.type == "init" and event.data.get("generationId") == self.running:
                mid = event.data.get("messageId")
                message_id = mid if isinstance(mid, str) else None
                parts = []
            elif (
                event.type == "token" and message_id is not None and event.message_id == message_id
            ):
                parts.append(event.text)
        return None if message_id is None else (message_id, "".join(parts))
