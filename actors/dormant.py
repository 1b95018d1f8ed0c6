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

from actors.event_log import EventLog, Subscription
from actors.presence import Presence
from actors.retries import RecentGenerations


class Dormant:
    __slots__ = ("hub", "presence", "recent")

    def __init__(self, hub: EventLog, presence: Presence, recent: RecentGenerations) -> None:
        self.hub = hub
        #: The viewers and the debounced ``presence`` events (handed to the next actor).
        self.presence = presence
        #: Recent generations' positions in the log (idempotent retries replay from them).
        self.recent = recent
        compact(hub)

    @classmethod
    def fresh(cls, hub: EventLog) -> Dormant:
        """The record of a log no actor of this process has written yet (cluster mode
        attaches one per conversation it serves): no viewers, no generations."""
        return cls(hub, Presence(hub), RecentGenerations())

    @property
    def empty(self) -> bool:
        return self.hub.subscriber_count == 0

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)
        self.presence.discard(sub)

    def wake(self) -> None:
        """An actor adopts the log: from now on it alone writes it."""
        self.presence.pause()

    def close(self) -> None:
        """The conversation is deleted or the server stops: subscribers see the end."""
        self.presence.clear()
        self.hub.close()


def compact(hub: EventLog) -> None:
    """Shrink the replay buffer kept while dormant, without changing a byte of it.

    Rendered transport frames are a cache of each event's JSON, rebuilt on demand (the
    JSON itself is already tight: :func:`actors.event_log.dumps`).
    """
    for event in hub.held():
        event.frames.clear()
