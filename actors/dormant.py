"""What stays of an idle conversation actor while someone still subscribes: its log.

An actor with nothing to do stops after its idle timeout even when viewers subscribe
(issue 15, item 12: one socket kept 2,000 actors alive, ~170 KB each). Its hub -- epoch,
seq, replay buffer and subscriptions -- outlives it in a :class:`Dormant` record kept by
the registry, without the actor's task, mailbox or history cache. The next actor of the
conversation adopts the hub, so subscribers see no gap and no ``reset``: to them nothing
happened.

While dormant nobody appends to the log but this record, and only ``presence`` when a
viewer leaves (debounced like the actor's). The record is dropped when its last
subscriber goes (the log then ends as an idle actor's always did) and its hub is closed
when the conversation is deleted or the server stops.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from actors.hub import Hub, Subscription


class Dormant:
    __slots__ = ("_timer", "debounce", "hub", "published", "recent", "viewers")

    def __init__(
        self,
        hub: Hub,
        viewers: set[Subscription],
        published: int,
        recent: OrderedDict[str, int],
        *,
        debounce: float,
    ) -> None:
        self.hub = hub
        #: The subscriptions that count in ``presence`` (shared with the next actor).
        self.viewers = viewers
        #: The viewer count last published.
        self.published = published
        #: Recent generations' positions in the log (idempotent retries replay from them).
        self.recent = recent
        self.debounce = debounce
        self._timer: asyncio.TimerHandle | None = None
        compact(hub)

    @property
    def empty(self) -> bool:
        return self.hub.subscriber_count == 0

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)
        if sub in self.viewers:
            self.viewers.discard(sub)
            self.presence()

    def presence(self) -> None:
        """Announce the viewer count soon, once per burst of leaves."""
        if self._timer is None and not self.hub.closed:
            self._timer = asyncio.get_running_loop().call_later(self.debounce, self._publish)

    def _publish(self) -> None:
        self._timer = None
        viewers = len(self.viewers)
        if viewers != self.published and not self.hub.closed:
            self.published = viewers
            self.hub.append("presence", {"viewers": viewers})

    def wake(self) -> None:
        """An actor adopts the log: from now on it alone writes it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """The conversation is deleted or the server stops: subscribers see the end."""
        self.wake()
        self.hub.close()
        self.viewers.clear()


def compact(hub: Hub) -> None:
    """Shrink the replay buffer kept while dormant, without changing a byte of it.

    Rendered transport frames are a cache of each event's JSON, rebuilt on demand (the
    JSON itself is already tight: :func:`actors.hub.dumps`).
    """
    for event in hub.held():
        event.frames.clear()
