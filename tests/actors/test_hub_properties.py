"""Property tests of the event log: whatever the interleaving, every subscriber sees an
ordered, gap-free, duplicate-free stream (with the merged-token rule) or a reset after
which it is consistent again, and token texts add up to what the actor appended."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from actors.event_log import Cursor, Event, EventLog, Subscription

EPOCH = "EP"
MESSAGES = ("m1", "m2", "m3")
texts = st.text(alphabet="ab\u00e9\U0001f600 ", min_size=0, max_size=6)


@dataclass
class Client:
    """A subscriber plus the checker of everything it receives, applied as it arrives."""

    log: list[Event]  # the model's copy of every appended event, index = seq - 1
    mode: str  # "queue", "direct", or "fails" (its direct raises instead of pausing)
    after: int | None  # the cursor's seq when it was replayable, else None
    pauses: list[bool]  # the socket's mood for successive direct writes, cyclically
    sub: Subscription | None = None
    calls: int = 0
    prev: int = -1  # seq of the last event received; -1 before the first
    resets: int = 0
    clean_since: int = 0  # stream continuous (no reset) after this seq
    got: dict[str, str] = field(default_factory=dict)  # token text since clean_since
    # The hub swallows whatever a callback raises, so a failed check is parked here.
    failure: Exception | None = None

    def direct(self, event: Event) -> bool:
        paused = self.pauses[self.calls % len(self.pauses)]
        self.calls += 1
        if paused and self.mode == "fails":
            raise ConnectionResetError("peer vanished")
        if paused:
            return False
        try:
            self.receive(event)
        except Exception as exc:
            self.failure = exc
            raise
        return True

    def start(self, sub: Subscription, expect_reset: bool) -> None:
        self.sub = sub
        assert sub.recovered is not expect_reset
        if expect_reset:
            self.prev = -1  # the first thing must be a reset
        elif self.after is None:
            self.prev = sub.start_seq
        else:
            self.prev = self.after
        self.clean_since = self.prev

    def receive(self, event: Event) -> None:
        assert event.json == orjson.dumps(event.data)
        assert event.cursor == f"{EPOCH}:{event.seq}"
        assert event.data["seq"] == event.seq and event.data["type"] == event.type
        assert event.data["epoch"] == EPOCH and event.data["conversationId"] == "c"
        if event.type == "reset":
            # a reset never goes back, and names an event that exists
            assert event.seq >= self.prev
            assert event.seq <= len(self.log)
            self.resets += 1
            self.prev = self.clean_since = event.seq
            self.got = {}
            return
        assert self.prev >= 0, "a non-recovered subscriber must get reset first"
        merged = event.data.get("merged")
        if merged is None:
            assert event.seq == self.prev + 1, (self.prev, event.seq)
            assert event.data == self.log[event.seq - 1].data
            first = event.seq
        else:
            assert event.type == "token"
            assert isinstance(merged, int) and merged >= 2
            first = event.seq - merged + 1
            assert first == self.prev + 1, (self.prev, event.seq, merged)
            originals = self.log[first - 1 : event.seq]
            assert all(e.type == "token" for e in originals)
            assert {e.message_id for e in originals} == {event.message_id}
            assert event.text == "".join(e.text for e in originals)
            expected = dict(originals[0].data, seq=event.seq, text=event.text)
            expected["merged"] = merged
            assert event.data == expected
        if event.type == "token":
            assert event.message_id is not None
            self.got[event.message_id] = self.got.get(event.message_id, "") + event.text
        self.prev = event.seq

    def drain(self) -> None:
        assert self.sub is not None
        for event in self.sub.take():
            self.receive(event)


class HubMachine(RuleBasedStateMachine):
    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.hub = EventLog("c", epoch=EPOCH, buffer_limit=40)
        self.log: list[Event] = []
        self.appended: dict[str, str] = {}  # messageId -> all its token text
        self.first_token: dict[str, int] = {}  # messageId -> seq of its first token
        self.inits: list[int] = []
        # seq where each generation's lead-in starts: right after the previous one ended
        self.lead_ins: list[int] = []
        self.last_end = 0
        self.live: list[Client] = []
        # The model's log is filled by the first subscriber (fan-out runs in subscription
        # order), so direct sinks called later within the same append can check against it.
        self.recorder = self.hub.subscribe(None, notify=lambda: None, direct=self._record)

    def _record(self, event: Event) -> bool:
        self.log.append(event)
        return True

    # --- the actor --------------------------------------------------------------------

    def _append(self, type_: str, fields: dict[str, object]) -> Event:
        event = self.hub.append(type_, fields)
        assert event.seq == len(self.log)
        assert self.log[-1] is event
        return event

    @rule(mid=st.sampled_from(MESSAGES), text=texts, n=st.integers(1, 6))
    def tokens(self, mid: str, text: str, n: int) -> None:
        for i in range(n):
            piece = text[i:] + str(i)
            event = self._append("token", {"messageId": mid, "text": piece})
            self.first_token.setdefault(mid, event.seq)
            self.appended[mid] = self.appended.get(mid, "") + piece

    @rule(type_=st.sampled_from(["message", "tool", "presence", "done", "error"]))
    def other(self, type_: str) -> None:
        event = self._append(type_, {"messageId": "m1", "payload": {"k": [1, "x"]}})
        if type_ in ("done", "error"):
            self.last_end = event.seq

    @rule()
    def init(self) -> None:
        seq = self._append("init", {"messageId": "m1"}).seq
        self.lead_ins.append(max(self.last_end, self.inits[-1] if self.inits else 0) + 1)
        self.inits.append(seq)

    # --- the readers ------------------------------------------------------------------

    @rule(
        target=clients,
        kind=st.sampled_from(
            ["none", "valid", "oldest", "head", "stale", "epoch", "future", "junk"]
        ),
        pick=st.integers(0, 1000),
        mode=st.sampled_from(["queue", "direct", "fails"]),
        pauses=st.lists(st.booleans(), min_size=1, max_size=4),
        max_events=st.integers(1, 8),
        max_bytes=st.sampled_from([1 << 20, 1 << 20, 600, 150]),
    )
    def subscribe(
        self,
        kind: str,
        pick: int,
        mode: str,
        pauses: list[bool],
        max_events: int,
        max_bytes: int,
    ) -> Client:
        last = self.hub.last_seq
        held = [e.seq for e in self.hub.held()]
        oldest_replayable = (held[0] - 1) if held else last
        after: str | None
        replayable: int | None = None
        if kind == "none":
            after = None
        elif kind == "valid":
            replayable = oldest_replayable + pick % (last - oldest_replayable + 1)
            after = f"{EPOCH}:{replayable}"
        elif kind == "oldest":
            replayable = oldest_replayable
            after = f"{EPOCH}:{replayable}"
        elif kind == "head":
            replayable = last
            after = f"{EPOCH}:{last}"
        elif kind == "stale" and oldest_replayable > 0:
            # half the time the edge: one event too old
            after = f"{EPOCH}:{oldest_replayable - 1 if pick % 2 else pick % oldest_replayable}"
        elif kind == "epoch":
            after = f"OTHER:{min(pick, last)}"
        elif kind == "future":
            after = f"{EPOCH}:{last + 1 + pick}"
        else:
            after = "no-colon" if pick % 2 else f"{EPOCH}:-{pick}"
        client = Client(self.log, mode, replayable, pauses)
        sub = self.hub.subscribe(
            after,
            notify=lambda: None,
            direct=None if mode == "queue" else client.direct,
            max_events=max_events,
            max_bytes=max_bytes,
        )
        client.start(sub, expect_reset=after is not None and replayable is None)
        client.drain()  # replay or reset first, as a transport does
        self.live.append(client)
        return client

    @rule(client=clients)
    def take(self, client: Client) -> None:
        client.drain()

    @rule(client=consumes(clients))
    def vanish(self, client: Client) -> None:
        assert client.sub is not None
        self.hub.unsubscribe(client.sub)
        assert client.sub.closed and client.sub.pending() == 0
        if client in self.live:
            self.live.remove(client)

    # --- checks -----------------------------------------------------------------------

    @invariant()
    def bookkeeping(self) -> None:
        open_subs = [c for c in self.live if c.sub is not None and not c.sub.closed]
        assert self.hub.subscriber_count == len(open_subs) + 1  # + the recorder
        assert self.recorder.pending() == 0
        for c in self.live:
            assert c.sub is not None
            if c.failure is not None:
                raise c.failure
            if c.sub.closed:
                assert c.mode == "fails" and isinstance(c.sub.error, ConnectionResetError)
            # the bound holds (live entries, after merging)
            assert c.sub._count <= c.sub._max_events

    @precondition(lambda self: len(self.inits) >= 2)
    @invariant()
    def previous_generation_is_replayable(self) -> None:
        since = self.lead_ins[-2] - 1
        if self.hub.last_seq - since <= self.hub.buffer_limit:
            replay = self.hub.replay(Cursor(EPOCH, since))
            assert replay is not None
            assert [e.seq for e in replay] == list(range(since + 1, self.hub.last_seq + 1))

    def teardown(self) -> None:
        for client in self.live:
            assert client.sub is not None
            client.drain()
            if client.sub.closed:
                continue
            # caught up: nothing lost at the end either
            assert client.prev == self.hub.last_seq
            for mid, first in self.first_token.items():
                if first > client.clean_since:
                    assert client.got.get(mid, "") == self.appended[mid], mid


HubMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHubMachine = HubMachine.TestCase


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_cursor_parse_never_raises(text: str) -> None:
    cursor = Cursor.parse(text)
    if cursor is not None:
        assert cursor.epoch and cursor.seq >= 0
        assert Cursor.parse(str(cursor)) == cursor


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20), st.integers(0, 10**15))
def test_cursor_round_trip(epoch: str, seq: int) -> None:
    assert Cursor.parse(str(Cursor(epoch, seq))) == Cursor(epoch, seq)
