"""The mirror (:class:`cluster.mirror.ClusterEventLog` without a sink) fed as the relay feeds it.

A hypothesis state machine: the source of truth is a model of the owner's Redis stream
kept here (its epoch, its entries, trimming, a new epoch when the log was lost), not the
code under test. The rules deliver what the relay's ``XREAD`` can hand the mirror -- the
next entry, one already held (a duplicate), one past a gap, one of an older epoch -- and
on a ``False`` from :meth:`ClusterEventLog.feed` resync the way the relay does
(:meth:`cluster.relay.Relay.sync`, whose reads are answered from the model). The
subscribers' streams are checked as they are drained: never an event twice or out of
order, never a gap or an epoch change without a ``reset``, every event equal to the
source's, and, after every step, each subscriber at the mirror's position.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis.asyncio as redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.event_log import Cursor, Event, Subscription
from cluster.keys import Keys, NodeContext
from cluster.mirror import ClusterEventLog
from cluster.relay import Relay

CID = "c"
KEYS = Keys("mirror-test:")
KINDS = ("message", "init", "token", "token", "token", "done")


@dataclass
class Source:
    """The owner's log as Redis holds it: an epoch and ``seq -> event`` (what is left
    after trimming); ``history`` keeps every event of every epoch ever written."""

    epoch: str
    entries: dict[int, dict[str, object]] = field(default_factory=dict)
    history: dict[tuple[str, int], dict[str, object]] = field(default_factory=dict)
    next_seq: int = 1

    @property
    def top(self) -> int:
        return max(self.entries, default=0)

    def append(self, kind: str, message: str, text: str) -> None:
        seq = self.next_seq
        self.next_seq += 1
        data: dict[str, object] = {
            "type": kind,
            "conversationId": CID,
            "epoch": self.epoch,
            "seq": seq,
        }
        if kind == "token":
            data |= {"messageId": message, "text": text}
        elif kind in ("init", "done"):
            data |= {"generationId": f"g-{message}", "messageId": message}
        else:
            data |= {"messageId": message, "role": "user"}
        self.entries[seq] = data
        self.history[(self.epoch, seq)] = data

    # What Redis answers to the relay's reads (redis-py's shapes: bytes ids and fields).

    @staticmethod
    def _entry(seq: int, data: dict[str, object]) -> tuple[bytes, dict[bytes, bytes]]:
        return f"{seq}-0".encode(), {b"d": orjson.dumps(data), b"t": b"0"}

    def xrange(self, start: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        low = 0 if start == "-" else int(start.split("-")[0])
        return [self._entry(s, d) for s, d in sorted(self.entries.items()) if s >= low]

    def xrevrange(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        top = self.top
        return [self._entry(top, self.entries[top])] if top else []


class _Pipe:
    """The three reads of :meth:`Relay.queue_reads`, answered from the model."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.answers: list[Any] = []

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get(self, key: str) -> None:
        assert key == KEYS.epoch(CID)
        self.answers.append(self.source.epoch.encode())

    def xrange(self, key: str, min: str, max: str) -> None:
        assert key == KEYS.log(CID) and max == "+"
        self.answers.append(self.source.xrange(min))

    def xrevrange(self, key: str, count: int) -> None:
        assert key == KEYS.log(CID) and count == 1
        self.answers.append(self.source.xrevrange())

    async def execute(self) -> list[Any]:
        return self.answers


class StreamReads:
    """Stands in for the Redis client in the relay's reads (pipeline and ``XRANGE``)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def pipeline(self, transaction: bool = True) -> _Pipe:
        return _Pipe(self.source)

    async def xrange(self, key: str, min: str, max: str) -> list[Any]:
        assert key == KEYS.log(CID)
        return self.source.xrange(min)


@dataclass
class Reader:
    """One subscriber and what it saw: the position (epoch, seq) of its last event."""

    sub: Subscription
    epoch: str
    seq: int
    resets: int = 0


class MirrorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.source = Source(epoch="E0")
        client = cast(redis.Redis, StreamReads(self.source))
        self.relay = Relay(NodeContext(client, KEYS, "node", lambda coro: coro.close()))
        # A mirror as ``ClusterProcess.attach`` makes one: own random epoch, then synced.
        self.hub = ClusterEventLog(
            CID,
            epoch=None,
            on_subscribe=lambda hub: None,
            on_presence=lambda hub: None,
            on_closed=lambda hub: self.closed_calls.append(hub),
        )
        self.closed_calls: list[ClusterEventLog] = []
        self.readers: list[Reader] = []
        self.resyncs = 0
        self.epochs = 0
        self.sync()

    def teardown(self) -> None:
        self.loop.close()

    # -- the relay's part --------------------------------------------------------------

    def sync(self) -> None:
        """What the relay does before a subscribe and after a feed that did not follow."""
        self.loop.run_until_complete(self.relay.sync(self.hub))
        self.assert_matches_source()

    def assert_matches_source(self) -> None:
        """After a sync the mirror is where the stream is, holding the stream's events."""
        hub, source = self.hub, self.source
        assert hub.epoch == source.epoch
        assert hub.last_seq == source.top
        for event in hub.held():
            assert event.data == source.history[(hub.epoch, event.seq)]

    def feed(self, seq: int, data: dict[str, object]) -> None:
        """One entry read by ``XREAD``; a ``False`` makes the relay resync."""
        hub = self.hub
        before = (hub.epoch, hub.last_seq)
        follows = seq == hub.last_seq + 1 and data["epoch"] == hub.epoch
        fed = hub.feed(seq, data)
        if follows:
            assert fed
            assert hub.last_seq == seq
            assert list(hub.held())[-1].data == data
            return
        # Anything else changes nothing by itself (no silent jump, no silent loss) ...
        assert (hub.epoch, hub.last_seq) == before
        if fed:
            # ... and is accepted only as a duplicate of what the mirror holds.
            assert seq <= hub.last_seq
            assert data["epoch"] != hub.epoch or data == self.source.history[(hub.epoch, seq)]
            return
        self.resyncs += 1
        self.sync()

    # -- the source: the owner appending, its log trimmed, lost, taken over ------------

    @rule(
        kind=st.sampled_from(KINDS),
        message=st.sampled_from(("m1", "m2")),
        text=st.text(alphabet="ab\u00e9 ", max_size=3),
    )
    def owner_appends(self, kind: str, message: str, text: str) -> None:
        self.source.append(kind, message, text)

    @precondition(lambda self: len(self.source.entries) > 1)
    @rule(data=st.data())
    def log_trimmed(self, data: st.DataObject) -> None:
        """``MINID`` trimming: the oldest entries go (the last one always stays)."""
        seqs = sorted(self.source.entries)
        floor = data.draw(st.sampled_from(seqs[1:]), label="floor")
        for seq in seqs:
            if seq < floor:
                del self.source.entries[seq]

    @rule(
        restart=st.sampled_from(("fresh", "continues", "ahead")),
        kind=st.sampled_from(KINDS),
    )
    def new_epoch(self, restart: str, kind: str) -> None:
        """The log was lost (expired, Redis restarted empty) and an owner started another
        epoch: from seq 1 (a fresh hub), or on from where it was, or past it."""
        source = self.source
        self.epochs += 1
        source.epoch = f"E{self.epochs}"
        source.entries = {}
        if restart == "fresh":
            source.next_seq = 1
        elif restart == "ahead":
            source.next_seq += 3
        source.append(kind, "m1", "x")

    # -- what the relay hands the mirror -------------------------------------------------

    @precondition(
        lambda self: not self.hub.closed and any(s > self.hub.last_seq for s in self.source.entries)
    )
    @rule()
    def deliver_next(self) -> None:
        """``XREAD`` from the mirror's position: the first entry after it."""
        seq = min(s for s in self.source.entries if s > self.hub.last_seq)
        self.feed(seq, self.source.entries[seq])

    @precondition(lambda self: not self.hub.closed and self.hub.last_seq > 0)
    @rule(data=st.data())
    def deliver_duplicate(self, data: st.DataObject) -> None:
        """An entry the mirror already has (a read overlapping a sync)."""
        held = [(e.seq, e.data) for e in self.hub.held()]
        if not held:
            return
        seq, event = data.draw(st.sampled_from(held), label="duplicate")
        self.feed(seq, dict(event))

    @precondition(
        lambda self: (
            not self.hub.closed and any(s > self.hub.last_seq + 1 for s in self.source.entries)
        )
    )
    @rule(data=st.data())
    def deliver_past_gap(self, data: st.DataObject) -> None:
        """An entry with sequence numbers skipped before it."""
        later = sorted(s for s in self.source.entries if s > self.hub.last_seq + 1)
        seq = data.draw(st.sampled_from(later), label="gap to")
        self.feed(seq, self.source.entries[seq])

    @precondition(
        lambda self: not self.hub.closed and len({epoch for epoch, _ in self.source.history}) > 1
    )
    @rule(data=st.data())
    def deliver_stale_epoch(self, data: st.DataObject) -> None:
        """An entry of an epoch that is not the log's any more (a read from before)."""
        old = sorted(k for k in self.source.history if k[0] != self.source.epoch)
        key = data.draw(st.sampled_from(old), label="stale")
        self.feed(key[1], self.source.history[key])

    @precondition(lambda self: not self.hub.closed)
    @rule()
    def resync(self) -> None:
        """A sync of the relay's own (before a subscribe, after a failed read)."""
        self.sync()

    @precondition(lambda self: self.hub.closed or self.resyncs >= 3)  # late: it ends the run
    @rule()
    def deliver_delete_marker(self) -> None:
        """The conversation was deleted (through any process): the ``_closed`` marker.
        Seen twice (a re-read), it closes the mirror once."""
        hub = self.hub
        before = (hub.epoch, hub.last_seq)
        assert hub.feed(hub.last_seq, {"type": "_closed"})
        assert hub.closed and self.closed_calls == [hub]
        assert (hub.epoch, hub.last_seq) == before
        for reader in self.readers:
            assert reader.sub.closed
        # Nothing feeds a deleted conversation's mirror any more.
        assert hub.feed(
            hub.last_seq + 1, self.source.history.get((hub.epoch, hub.last_seq + 1), {})
        )
        assert (hub.epoch, hub.last_seq) == before

    # -- subscribers ---------------------------------------------------------------------

    @precondition(lambda self: not self.hub.closed)
    @rule(
        where=st.sampled_from(("live", "held", "behind", "other epoch", "garbage")),
        data=st.data(),
    )
    def subscribe(self, where: str, data: st.DataObject) -> None:
        hub = self.hub
        held = [e.seq for e in hub.held()]
        after: str | None
        expect: tuple[str, int] | None  # where the replay starts (None: a reset comes first)
        if where == "live":
            after, expect = None, (hub.epoch, hub.last_seq)
        elif where == "held" and held:
            seq = data.draw(st.sampled_from([held[0] - 1, *held]), label="after")
            after, expect = str(Cursor(hub.epoch, seq)), (hub.epoch, seq)
        elif where == "behind" and held and held[0] > 1:
            after, expect = str(Cursor(hub.epoch, held[0] - 2)), None
        elif where == "other epoch":
            after, expect = f"Eother:{hub.last_seq}", None
        else:
            after, expect = "not a cursor", None
        sub = hub.subscribe(after, notify=lambda: None)
        assert sub.recovered is (expect is not None)
        # A reader expecting a reset first starts nowhere: only a reset can place it.
        epoch, seq = expect if expect is not None else ("", -1)
        self.readers.append(Reader(sub, epoch, seq))

    @precondition(lambda self: bool(self.readers))
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        reader = data.draw(st.sampled_from(self.readers), label="reader")
        self.check(reader)
        self.hub.unsubscribe(reader.sub)
        self.readers.remove(reader)

    # -- the checks ----------------------------------------------------------------------

    def check(self, reader: Reader) -> None:
        """Drain a subscriber, checking each event against the source."""
        history = self.source.history
        for event in reader.sub.take():
            self.check_event(reader, event, history)

    @staticmethod
    def check_event(
        reader: Reader, event: Event, history: dict[tuple[str, int], dict[str, object]]
    ) -> None:
        data = event.data
        assert event.json == orjson.dumps(data)
        assert data["epoch"] == (event.cursor.rpartition(":")[0])
        if event.type == "reset":
            # Placed anew: what follows continues from the reset's position.
            reader.epoch, reader.seq = str(data["epoch"]), event.seq
            reader.resets += 1
            return
        # Without a reset: same epoch, the very next seq (a merged run counts its tokens).
        assert data["epoch"] == reader.epoch, (reader, data)
        count = data.get("merged", 1)
        assert isinstance(count, int)
        assert event.seq - count == reader.seq, (reader, data)
        if count == 1:
            assert data == history[(reader.epoch, event.seq)]
        else:
            parts = [history[(reader.epoch, s)] for s in range(reader.seq + 1, event.seq + 1)]
            assert all(p["type"] == "token" for p in parts)
            assert all(p["messageId"] == data["messageId"] for p in parts)
            assert data["text"] == "".join(str(p["text"]) for p in parts)
        reader.seq = event.seq

    @invariant()
    def subscribers_follow_the_mirror(self) -> None:
        for reader in self.readers:
            self.check(reader)
            assert (reader.epoch, reader.seq) == (self.hub.epoch, self.hub.last_seq)

    @invariant()
    def mirror_holds_the_sources_events(self) -> None:
        hub = self.hub
        held = [e.seq for e in hub.held()]
        assert held == list(range(hub.last_seq - len(held) + 1, hub.last_seq + 1))
        for event in hub.held():
            assert event.data == self.source.history[(hub.epoch, event.seq)]


MirrorMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMirror = MirrorMachine.TestCase
