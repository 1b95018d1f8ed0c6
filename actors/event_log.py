"""The event log of one conversation: sequence numbers, replay buffer, per-subscriber queues.

This module is sans-I/O on purpose (the python-websockets idea): the tricky part of live
delivery -- ordering, replay, merging tokens for laggards, bounding memory, resets -- is a
plain state machine that the tests drive directly, without sockets or an event loop. The
actor is its only writer and transports are its readers; all of them run on one event loop
thread, so there are no locks.

Fan-out is the hot path (one event to a thousand subscribers), hence: every event is
serialised once at append; a subscriber whose socket keeps up gets the event through one
``direct`` call and nothing is queued for it; only a lagging subscriber pays for a queue,
where consecutive tokens of one message collapse into one pending entry whose JSON is built
once, when the subscriber finally drains it.

Why one module of ~610 lines: the log, the replay buffer and the per-subscriber queues are
one sans-I/O state machine whose invariants (order, no gaps, all-or-nothing replay, merge)
span all three; its property tests drive it as one.

Cluster mode's log (``cluster.mirror.ClusterEventLog``) subclasses :class:`EventLog` and
changes it only through public hooks: it overrides :meth:`EventLog.append`,
:meth:`EventLog.subscribe`, :meth:`EventLog.live_answer` and :meth:`EventLog.rebase`, and
reads :attr:`EventLog.floor`; it writes no private field of a log or a subscription.

Variables and attributes named ``hub`` hold an :class:`EventLog` (the glossary's "log"; the
short name stays where ``log`` names the module's structlog logger).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import islice
from time import perf_counter
from typing import ClassVar, NamedTuple, cast

import orjson

from actors.ids import opaque_id

__all__ = ["RESERVED", "TERMINAL", "Cursor", "Event", "EventLog", "Subscription", "dumps"]


def dumps(data: object) -> bytes:
    """``orjson.dumps``, copied tight.

    orjson 3.13 hands back its whole write buffer: every result holds ~4 KiB of memory
    however short the JSON (measured: 4.02 KiB of RSS per 190-byte token event, 100,000
    events). The hub keeps each event of the current and the previous generation for
    replay, so a 1 MiB answer held ~100 MB. The copy costs ~0.2 µs per event.
    """
    return bytes(memoryview(orjson.dumps(data)))


#: Keys the hub owns in every event; an actor passing them in ``fields`` is a bug.
RESERVED = frozenset({"type", "conversationId", "epoch", "seq", "merged"})
#: What a log scoped by another key (the account channel) reserves besides its scope.
_RESERVED_BESIDE = RESERVED - {"conversationId"}
#: The events that end a generation (the one definition server-side code uses); the next
#: generation's lead-in starts right after.
TERMINAL = frozenset({"done", "error", "cancelled"})
#: More digits than any real seq: keeps ``int()`` cheap on hostile input.
_MAX_SEQ_DIGITS = 18


class Cursor(NamedTuple):
    """A position in a log: the client sends back the last ``id`` it saw to resume."""

    epoch: str
    seq: int

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """Read ``"<epoch>:<seq>"``; ``None`` instead of an exception because a bad cursor
        from a client is not an error, it just cannot be replayed."""
        epoch, sep, digits = text.rpartition(":")
        if (
            not sep
            or not epoch
            or not digits
            or len(digits) > _MAX_SEQ_DIGITS
            or not digits.isascii()
            or not digits.isdigit()
        ):
            return None
        return cls(epoch, int(digits))

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"


@dataclass(slots=True)
class Event:
    """One log event, shared by every subscriber: never mutate ``data`` or ``json``.

    ``frames`` lets each transport render its wire frame once per event (e.g.
    ``frames["sse"]``) instead of once per subscriber. ``message_id`` and ``text`` repeat
    the token fields with real types so the merge path and NDJSON responses need no casts.
    """

    type: str
    seq: int
    data: dict[str, object]
    json: bytes
    cursor: str
    frames: dict[str, bytes] = field(default_factory=dict)
    message_id: str | None = None
    text: str = ""
    #: ``time.perf_counter()`` when the hub appended it (0 for events outside the log):
    #: what ``cero_delivery_lag_seconds`` measures a late write against.
    published: float = 0.0


class _Merged:
    """Tokens of one message waiting for a lagging subscriber.

    Only the texts are collected here; the merged :class:`Event` (and its JSON) is built
    once at ``take()``, so absorbing a token costs a list append, not a serialisation.
    """

    __slots__ = ("count", "first", "message_id", "seq", "texts")

    type: ClassVar[str] = "token"

    def __init__(self, first: Event, second: Event) -> None:
        self.first = first
        self.texts = [first.text, second.text]
        self.count = 2
        self.seq = second.seq
        self.message_id = first.message_id

    def build(self, epoch: str) -> Event:
        text = "".join(self.texts)
        data = dict(self.first.data)
        data["seq"] = self.seq
        data["text"] = text
        data["merged"] = self.count
        return Event(
            "token",
            self.seq,
            data,
            dumps(data),
            f"{epoch}:{self.seq}",
            {},
            self.message_id,
            text,
            self.first.published,
        )


_Entry = Event | _Merged


class Subscription:
    """One reader of a hub: a transport connection, or a chat response stream.

    A subscriber that keeps up never touches its queue. Pump pattern for a transport::

        sub = hub.subscribe(after, notify=wake.set, direct=write_now)
        write(sub.take())          # replay or reset is already pending: take it first
        while not sub.closed:
            await wake.wait(); wake.clear()
            write(sub.take())      # write ALL of it before awaiting drain: once the
                                   # queue is empty, later events go through direct
        write(sub.take())          # closed: flush what was appended before closing

    Pending entries are bounded (count after merging, and bytes); past the bound the queue
    is replaced by a single ``reset`` and ``overflowed`` stays ``True`` -- SSE sends the reset
    and goes on, WebSocket closes with 4008.
    """

    __slots__ = (
        "_armed",
        "_bytes",
        "_count",
        "_direct",
        "_fast",
        "_hub",
        "_max_bytes",
        "_max_events",
        "_merges",
        "_notify",
        "_queue",
        "closed",
        "error",
        "overflowed",
        "recovered",
        "start_seq",
    )

    def __init__(
        self,
        hub: EventLog,
        notify: Callable[[], None],
        direct: Callable[[Event], bool] | None,
        max_events: int,
        max_bytes: int,
    ) -> None:
        #: The cursor was replayed (or there was none); False means a ``reset`` comes first.
        self.recovered = True
        #: ``hub.last_seq`` when subscribing: what the WebSocket ``subscribed`` frame reports.
        self.start_seq = hub.last_seq
        #: The queue went past its bound at least once (sticky).
        self.overflowed = False
        #: No more events will arrive; what is still pending can be taken.
        self.closed = False
        #: The exception a callback raised, when that is why this subscription was dropped.
        self.error: BaseException | None = None
        self._hub = hub
        self._notify = notify
        self._direct = direct
        # ``direct`` while it may be used (queue empty, not closed), else None: the fan-out
        # loop then needs one attribute load to pick the path.
        self._fast: Callable[[Event], bool] | None = direct
        self._queue: list[_Entry] = []
        # Bound accounting covers live entries only; the replayed prefix is not counted so
        # a long (all-or-nothing) replay cannot trip the bound by itself.
        self._count = 0
        self._bytes = 0
        self._merges = False
        # Notify on the first enqueue since the last take(), i.e. once per wakeup.
        self._armed = True
        self._max_events = max_events
        self._max_bytes = max_bytes

    def pending(self) -> int:
        """Entries waiting in the queue (a run of merged tokens counts as one)."""
        return len(self._queue)

    def take(self) -> list[Event]:
        """Drain everything pending, in order; afterwards ``direct`` is used again."""
        queue = self._queue
        self._armed = True
        if not self.closed:
            self._fast = self._direct
        if not queue:
            return []
        self._queue = []
        self._count = 0
        self._bytes = 0
        if self._merges:
            self._merges = False
            epoch = self._hub.epoch
            for i, entry in enumerate(queue):
                if isinstance(entry, _Merged):
                    queue[i] = entry.build(epoch)
        return cast("list[Event]", queue)

    def _enqueue(self, event: Event) -> None:
        """Queue one live event: merge, bound, and wake the pump once per wakeup."""
        queue = self._queue
        self._fast = None
        tail = queue[-1] if queue else None
        if (
            tail is not None
            and event.type == "token"
            and tail.type == "token"
            and tail.message_id == event.message_id
        ):
            if isinstance(tail, _Merged):
                tail.texts.append(event.text)
                tail.count += 1
                tail.seq = event.seq
            else:
                queue[-1] = _Merged(tail, event)
                self._merges = True
            # Growth of a merged entry is lag, however few entries: bound it by bytes.
            self._bytes += len(event.text)
            if self._bytes > self._max_bytes:
                self._overflow()
        else:
            queue.append(event)
            self._count += 1
            self._bytes += len(event.json)
            # A single oversized event on an otherwise empty queue is not lag.
            if self._count > self._max_events or (
                self._bytes > self._max_bytes and self._count > 1
            ):
                self._overflow()
        if self._armed:
            self._armed = False
            self._notify()

    def refuse_replay(self) -> None:
        """Drop whatever is pending and queue a ``reset`` at the log's position instead.

        For a transport that will not send this replay (its replay byte budget is spent):
        to the client it is a cursor that could not be replayed (``recovered`` False,
        refetch over REST, live events follow from the reset's ``seq + 1``), which every
        client already handles. Not lag, so ``overflowed`` stays as it was."""
        self.recovered = False
        self._replace_with_reset()
        self._fast = None

    def reset(self) -> None:
        """Replace whatever is pending with a ``reset`` that is not this subscriber's doing
        (the log it follows moved: a cluster mirror rebased), and wake it. ``overflowed``
        is left alone: a WebSocket sends this ``reset`` and stays open, where a laggard's
        overflow closes it with 4008."""
        if self.closed:
            return
        self._replace_with_reset()
        self._fast = None
        if self._armed:
            self._armed = False
            self._notify()

    def _overflow(self) -> None:
        self.overflowed = True
        self._replace_with_reset()

    def _replace_with_reset(self) -> None:
        reset = self._hub._reset_event()
        self._queue = [reset]
        self._count = 1
        self._bytes = len(reset.json)
        self._merges = False

    def _close(self) -> None:
        self.closed = True
        self._fast = None


class EventLog:
    """The ordered event log of one conversation, written only by its actor.

    Replay keeps at least the current and the previous generation (including the user
    ``message`` event that led into each), so a reconnecting client, or a retried chat
    request, can resume without refetching; ``buffer_limit`` caps it regardless.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_fanning",
        "_gen_floor",
        "_last_init",
        "_last_terminal",
        "_reset",
        "_snapshot",
        "_subs",
        "buffer_limit",
        "conversation_id",
        "epoch",
        "last_seq",
        "max_bytes",
        "max_events",
        "scope",
    )

    def __init__(
        self,
        conversation_id: str,
        *,
        epoch: str | None = None,
        max_events: int = 1000,
        max_bytes: int = 1 << 20,
        buffer_limit: int = 100_000,
        scope: str = "conversationId",
    ) -> None:
        if epoch == "":
            raise ValueError("epoch must be non-empty")
        if max_events < 1 or max_bytes < 1 or buffer_limit < 1:
            raise ValueError("max_events, max_bytes and buffer_limit must be >= 1")
        self.conversation_id = conversation_id
        #: The key every event names this log by: ``conversationId`` for a conversation's
        #: log, ``channel`` for a user's account channel (:mod:`actors.account_feed`),
        #: whose events may then carry a ``conversationId`` of their own.
        self.scope = scope
        # A fresh epoch per incarnation: cursors from a lost log can never look valid.
        self.epoch = epoch if epoch is not None else opaque_id()
        self.last_seq = 0
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.buffer_limit = buffer_limit
        self._buffer: deque[Event] = deque(maxlen=buffer_limit)
        self._subs: dict[Subscription, None] = {}
        # Fan-out iterates an immutable snapshot, so callbacks may (un)subscribe safely.
        self._snapshot: tuple[Subscription, ...] | None = ()
        self._fanning = False
        self._closed = False
        self._reset: Event | None = None
        # First seq of the current generation's lead-in (what follows the previous one).
        self._gen_floor = 1
        self._last_init = 0
        self._last_terminal = 0

    @property
    def cursor(self) -> str:
        return f"{self.epoch}:{self.last_seq}"

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, type: str, fields: dict[str, object]) -> Event:
        """Number, serialise (once), store and offer an event to every subscriber.

        Raises only for the caller's own mistakes (reserved keys, a token without string
        ``messageId``/``text``, unserialisable data, append after close or from inside a
        subscriber callback); those leave the log unchanged. A failing subscriber callback
        only drops that subscriber.
        """
        if self._closed:
            raise RuntimeError("append to a closed hub")
        if self._fanning:
            # A nested fan-out would deliver the next event before this one to the
            # subscribers not yet visited.
            raise RuntimeError("append from inside a subscriber callback")
        reserved = RESERVED if self.scope == "conversationId" else _RESERVED_BESIDE
        if not reserved.isdisjoint(fields) or self.scope in fields:
            clash = (reserved | {self.scope}) & fields.keys()
            raise ValueError(f"fields must not contain {sorted(clash)}")
        message_id: str | None = None
        text = ""
        if type == "token":
            mid = fields.get("messageId")
            txt = fields.get("text")
            if not isinstance(mid, str) or not isinstance(txt, str):
                raise TypeError("a token needs string messageId and text")
            message_id, text = mid, txt
        seq = self.last_seq + 1
        data: dict[str, object] = {
            "type": type,
            self.scope: self.conversation_id,
            "epoch": self.epoch,
            "seq": seq,
        }
        data.update(fields)
        event = Event(
            type,
            seq,
            data,
            dumps(data),
            f"{self.epoch}:{seq}",
            {},
            message_id,
            text,
            perf_counter(),
        )
        self.last_seq = seq
        if type == "init":
            self._start_generation(seq)
        elif type in TERMINAL:
            self._last_terminal = seq
        self._buffer.append(event)

        subs = self._snapshot
        if subs is None:
            subs = self._snapshot = tuple(self._subs)
        if not subs:
            return event
        failed: list[tuple[Subscription, Exception]] | None = None
        self._fanning = True
        try:
            for sub in subs:
                try:
                    fast = sub._fast
                    if fast is not None and fast(event):
                        continue
                    if not sub.closed:
                        sub._enqueue(event)
                except Exception as exc:  # one subscriber's failure must not reach the others
                    if failed is None:
                        failed = []
                    failed.append((sub, exc))
        finally:
            self._fanning = False
        if failed is not None:
            for sub, error in failed:
                sub.error = error
                self._drop(sub, wake=True)
        return event

    def subscribe(
        self,
        after: str | Cursor | None,
        *,
        notify: Callable[[], None],
        direct: Callable[[Event], bool] | None = None,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> Subscription:
        """Start reading: replay after ``after`` (all or nothing) or queue a ``reset``.

        ``after=None`` means live from now. A malformed cursor string is treated like any
        other cursor that cannot be replayed. Whatever is queued here is NOT announced
        through ``notify``: call ``take()`` right after subscribing. ``notify`` and
        ``direct`` are never called from inside ``subscribe``.
        """
        sub = Subscription(
            self,
            notify,
            direct,
            self.max_events if max_events is None else max_events,
            self.max_bytes if max_bytes is None else max_bytes,
        )
        if sub._max_events < 1 or sub._max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        if self._closed:
            sub.recovered = False
            sub._close()
            return sub
        if after is not None:
            cursor = after if isinstance(after, Cursor) else Cursor.parse(after)
            events = None if cursor is None else self.replay(cursor)
            if events is None:
                sub.recovered = False
                sub._queue = [self._reset_event()]
            elif events:
                sub._queue = list(events)
            if sub._queue:
                sub._fast = None
        self._subs[sub] = None
        self._snapshot = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to ``sub`` and free its queue; safe to call twice."""
        self._drop(sub, wake=False)
        sub._queue = []
        sub._count = 0
        sub._bytes = 0
        sub._merges = False

    def replay(self, after: Cursor) -> list[Event] | None:
        """Every held event after ``after``, or ``None`` if any of them is gone."""
        if after.epoch != self.epoch or after.seq < 0 or after.seq > self.last_seq:
            return None
        missing = self.last_seq - after.seq
        if missing == 0:
            return []
        if missing > len(self._buffer):
            return None
        # The buffer is contiguous and ends at last_seq: walk only the tail we need.
        tail = list(islice(reversed(self._buffer), missing))
        tail.reverse()
        return tail

    def resume_cursor(self, message_id: str) -> str | None:
        """The cursor of the event just before the ``init`` of the generation answering in
        ``message_id``, while that ``init`` is replayable (else ``None``): subscribing
        after it replays the whole generation, then live."""
        for event in reversed(self._buffer):
            if event.type == "init" and event.data.get("messageId") == message_id:
                return f"{self.epoch}:{event.seq - 1}"
        return None

    def live_answer(self) -> tuple[str, str] | None:
        """``(message id, text so far)`` of an answer streaming into this log without a
        generation of this process behind it; ``None`` here: in one process every answer
        has its generation (``ConversationActor.streaming_answer`` asks that first). A log
        written by another process (cluster mode's mirror) overrides it."""
        return None

    def rebase(self, epoch: str, last_seq: int) -> None:
        """Follow another position of the log (``epoch``, ``last_seq``): the replay buffer
        goes and every subscriber gets ``reset`` at the new position (refetch over REST,
        live from ``last_seq + 1``); ``overflowed`` is left alone (not the subscriber's
        doing). For a log whose events are written elsewhere (cluster mode's mirror)."""
        self.epoch = epoch
        self.last_seq = last_seq
        self._buffer.clear()
        self._gen_floor = last_seq + 1
        self._last_init = 0
        self._last_terminal = 0
        self._reset = None
        for sub in tuple(self._subs):
            sub.reset()

    @property
    def floor(self) -> int:
        """The oldest seq the replay buffer holds (``last_seq`` when it is empty)."""
        return self._buffer[0].seq if self._buffer else self.last_seq

    def held(self) -> Iterator[Event]:
        """The replay buffer, oldest first (for diagnostics and tests)."""
        return iter(self._buffer)

    def close(self) -> None:
        """Drop every subscriber; each sees ``closed`` (and is woken) and may still take
        what is pending, so a final event appended just before closing gets out."""
        self._closed = True
        for sub in tuple(self._subs):
            self._drop(sub, wake=True)

    def _drop(self, sub: Subscription, *, wake: bool) -> None:
        if sub in self._subs:
            del self._subs[sub]
            self._snapshot = None
        if sub.closed:
            return
        sub._close()
        if wake:
            with suppress(Exception):  # it is being dropped anyway
                sub._notify()

    def _reset_event(self) -> Event:
        """The ``reset`` for the current position, shared by every subscriber reset here
        (it is not part of the log and takes no seq)."""
        reset = self._reset
        if reset is None or reset.seq != self.last_seq:
            seq = self.last_seq
            data: dict[str, object] = {
                "type": "reset",
                self.scope: self.conversation_id,
                "epoch": self.epoch,
                "seq": seq,
            }
            reset = self._reset = Event("reset", seq, data, dumps(data), f"{self.epoch}:{seq}")
        return reset

    def _start_generation(self, seq: int) -> None:
        """Trim replay to the previous generation's lead-in onwards.

        A generation's lead-in starts right after the previous generation ended (its
        terminal event, or its ``init`` if it never ended), so the user ``message`` event
        that preceded each ``init`` stays replayable together with its answer.
        """
        if self._last_init:
            floor = self._gen_floor
            buffer = self._buffer
            while buffer and buffer[0].seq < floor:
                buffer.popleft()
        self._gen_floor = max(self._last_init, self._last_terminal) + 1
        self._last_init = seq
