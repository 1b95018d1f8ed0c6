"""The account channel: one log per user of what changed in the account, for every device.

Each user has an :class:`~actors.event_log.EventLog` scoped by ``channel: "account"``
(instead of a ``conversationId``), so cursors, replay, ``reset`` and the subscribers'
bounded queues work exactly as for a conversation's log, and every transport renders its
events unchanged. The events (docs/api.md, Account channel) are
:data:`ACCOUNT_EVENTS`; an actor reports the answers it starts and ends through
:class:`AnswerEvents`, routes report the rest.

:class:`AccountFeeds` holds the logs of one process: a log with no subscription is kept
(for resumes) among the :attr:`AccountFeeds.max_idle` most recently used, the oldest
idle ones go first; a resume after that gets ``reset``, as after a restart. Cluster mode
replaces it with :class:`cluster.account_feed.ClusterAccountFeeds`, where the log lives
in Redis and every process mirrors it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from actors.event_log import Cursor, EventLog, Subscription
from actors.mailbox import SubscribeSpec

__all__ = ["ACCOUNT_EVENTS", "CHANNEL", "AccountFeeds", "AnswerEvents"]

#: The value of every account event's ``channel`` field.
CHANNEL = "account"
#: What the account channel carries (besides ``reset``).
ACCOUNT_EVENTS = frozenset(
    {
        "conversation.created",
        "conversation.renamed",
        "conversation.deleted",
        "answer.started",
        "answer.ended",
        "session.revoked",
    }
)
#: Events a user's log holds for replay.
BUFFER_EVENTS = 256


class AnswerEvents(Protocol):
    """What an actor tells its user's account channel (``ActorDeps.account``); called
    from the actor's task, never blocking it."""

    def answer_started(
        self, user_id: str, conversation_id: str, message_id: str, generation_id: str
    ) -> None: ...

    def answer_ended(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        generation_id: str,
        status: str,
    ) -> None: ...


class AccountFeeds:
    """The account logs of this process, by user id."""

    def __init__(self, *, max_idle: int = 10_000, buffer_events: int = BUFFER_EVENTS) -> None:
        self.max_idle = max_idle
        self.buffer_events = buffer_events
        self._logs: OrderedDict[str, EventLog] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def new_log(self, user_id: str, epoch: str | None = None) -> EventLog:
        return EventLog(
            CHANNEL,
            epoch=epoch,
            max_events=1000,
            buffer_limit=self.buffer_events,
            scope="channel",
        )

    def get(self, user_id: str) -> EventLog | None:
        return self._logs.get(user_id)

    def log_of(self, user_id: str) -> EventLog:
        log = self._logs.get(user_id)
        if log is None:
            log = self._logs[user_id] = self.new_log(user_id)
            self._evict()
        else:
            self._logs.move_to_end(user_id)
        return log

    def _evict(self) -> None:
        """Drop the least recently used logs without subscriptions past ``max_idle``."""
        excess = len(self._logs) - self.max_idle
        if excess <= 0:
            return
        for user_id in list(self._logs):
            if excess <= 0:
                break
            log = self._logs[user_id]
            if log.subscriber_count == 0:
                del self._logs[user_id]
                log.close()
                excess -= 1

    def start(self) -> None:
        """Start what the logs need in the background (nothing in one process)."""

    def wanted(self, user_id: str) -> bool:
        """Whether an event of ``user_id`` has a log to go to: here, once a device of the
        user subscribed (and until the log is dropped)."""
        return user_id in self._logs

    async def publish(self, user_id: str, type: str, fields: dict[str, object]) -> None:
        """Append one event to ``user_id``'s log (every device of the user gets it).

        A user none of whose devices ever subscribed has no log, and the event goes
        nowhere: no cursor of that log can exist. Keeping one per user anyway cost RSS:
        events allocated amid an answer's token objects pinned their memory
        (``tests/server/ops/test_memory.py``: +57 MB after the second round of 12 answers
        of 1 MiB, none with a subscriber)."""
        log = self._logs.get(user_id)
        if log is not None:
            self._logs.move_to_end(user_id)
            log.append(type, fields)

    async def subscribe(
        self, user_id: str, after: str | None, spec: SubscribeSpec
    ) -> tuple[EventLog, Subscription]:
        """Read ``user_id``'s log after the cursor ``after`` (all or nothing, else
        ``reset``), or live from now."""
        log = self.log_of(user_id)
        cursor = Cursor.parse(after) if after is not None else None
        sub = log.subscribe(
            cursor if cursor is not None else after,
            notify=spec.notify,
            direct=spec.direct,
            max_events=spec.max_events,
            max_bytes=spec.max_bytes,
        )
        return log, sub

    def unsubscribe(self, log: EventLog, sub: Subscription) -> None:
        log.unsubscribe(sub)

    async def close(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()
