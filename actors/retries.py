"""Idempotent sends: a ``clientMessageId`` sent again answers its turn, never a second one.

The store finds the turn by its key (unique per user). What the actor adds is where each
of its recent generations began in the log — the seq just before the turn's ``message``
event — so a retried send can subscribe from there and see the whole turn again: live
while it runs, replayed once it has ended, as long as the log still holds it. Past that
the caller rebuilds the turn's events from the stored rows.
"""

from __future__ import annotations

from collections import OrderedDict

from actors.event_log import TERMINAL, Cursor, EventLog

#: Generations remembered for idempotent retries (their cursor in the log).
RECENT_GENERATIONS = 32


class RecentGenerations:
    """The last :data:`RECENT_GENERATIONS` generations of a conversation's log, each with
    the seq just before its turn. It goes with the log: a dormant record keeps it, the next
    actor adopts it."""

    __slots__ = ("_seq_before",)

    def __init__(self) -> None:
        self._seq_before: OrderedDict[str, int] = OrderedDict()

    def remember(self, generation_id: str, seq_before: int) -> None:
        self._seq_before[generation_id] = seq_before
        while len(self._seq_before) > RECENT_GENERATIONS:
            self._seq_before.popitem(last=False)

    def seq_before(self, generation_id: str) -> int | None:
        """The seq just before the turn, if remembered (cluster mode forwards it)."""
        return self._seq_before.get(generation_id)

    def replay_cursor(self, hub: EventLog, generation_id: str, *, running: bool) -> Cursor | None:
        """Where a retried send's subscription starts: just before the turn, when the log
        still holds it from there and it is running or its ending is in the log too."""
        seq_before = self._seq_before.get(generation_id)
        if seq_before is None:
            return None
        cursor = Cursor(hub.epoch, seq_before)
        replay = hub.replay(cursor)
        if replay is None or not (running or any(e.type in TERMINAL for e in replay)):
            return None
        return cursor
