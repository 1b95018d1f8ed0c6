"""Who is watching a conversation's log, and the ``presence`` events that say so.

Joins and leaves within ``debounce`` seconds are published as one event (N viewers joining
would otherwise cost N presence events to each of N subscribers). The same object serves
the live actor and, while it is stopped, the registry's dormant record of its log.
"""

from __future__ import annotations

import asyncio

from actors.event_log import EventLog, Subscription

#: Presence changes within this window are published as one event.
PRESENCE_DEBOUNCE_S = 0.25


class Presence:
    __slots__ = ("_timer", "debounce", "hub", "published", "viewers")

    def __init__(self, hub: EventLog, *, debounce: float = PRESENCE_DEBOUNCE_S) -> None:
        self.hub = hub
        self.debounce = debounce
        #: The subscriptions that count in ``presence``.
        self.viewers: set[Subscription] = set()
        #: The viewer count last published.
        self.published = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.viewers)

    def add(self, sub: Subscription, *, announce: bool = True) -> None:
        self.viewers.add(sub)
        if announce:
            self.announce()

    def discard(self, sub: Subscription) -> None:
        if sub in self.viewers:
            self.viewers.discard(sub)
            self.announce()

    def announce(self) -> None:
        """Publish the viewer count soon, once per burst of joins and leaves."""
        if self._timer is None and not self.hub.closed:
            self._timer = asyncio.get_running_loop().call_later(self.debounce, self._publish)

    def _publish(self) -> None:
        self._timer = None
        viewers = len(self.viewers)
        if viewers != self.published and not self.hub.closed:
            self.published = viewers
            self.hub.append("presence", {"viewers": viewers})

    def pause(self) -> bool:
        """Stop a pending announcement (the log changes hands); ``True`` if one was."""
        if self._timer is None:
            return False
        self._timer.cancel()
        self._timer = None
        return True

    def resume(self) -> None:
        """The new writer of the log announces what changed while it was away."""
        if len(self.viewers) != self.published:
            self.announce()

    def clear(self) -> None:
        self.pause()
        self.viewers.clear()
