"""Unit tests of the conversation event log (actors/event_log.py), one rule at a time."""

from __future__ import annotations

import orjson
import pytest

from actors.event_log import Cursor, Event, EventLog, Subscription


class Sink:
    """A stand-in transport: counts wakeups, optionally writes directly until paused."""

    def __init__(self, *, paused: bool = False) -> None:
        self.notified = 0
        self.written: list[Event] = []
        self.paused = paused

    def notify(self) -> None:
        self.notified += 1

    def direct(self, event: Event) -> bool:
        if self.paused:
            return False
        self.written.append(event)
        return True


def tok(hub: EventLog, text: str, mid: str = "m1") -> Event:
    return hub.append("token", {"messageId": mid, "text": text})


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def sub_of(hub: EventLog, after: str | Cursor | None = None) -> Subscription:
    return hub.subscribe(after, notify=lambda: None)


# --- Cursor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc:0", Cursor("abc", 0)),
        ("abc:42", Cursor("abc", 42)),
        ("a:b:7", Cursor("a:b", 7)),
        ("e:007", Cursor("e", 7)),
    ],
)
def test_cursor_parse_valid(text: str, expected: Cursor) -> None:
    assert Cursor.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "abc",
        "abc:",
        ":5",
        "abc:-1",
        "abc:+1",
        "abc: 1",
        "abc:1 ",
        "abc:1.0",
        "abc:x",
        "abc:١٢",  # non-ASCII digits
        "abc:1_000",
        "abc:" + "9" * 5000,
    ],
)
def test_cursor_parse_malformed_is_none(text: str) -> None:
    assert Cursor.parse(text) is None


def test_cursor_str_round_trips() -> None:
    c = Cursor("ep-1", 12)
    assert str(c) == "ep-1:12"
    assert Cursor.parse(str(c)) == c


# --- append ---------------------------------------------------------------------------


def test_append_numbers_and_serialises_once() -> None:
    hub = EventLog("c1", epoch="E")
    assert hub.last_seq == 0
    assert hub.cursor == "E:0"
    ev = hub.append("message", {"message": {"id": "u1", "role": "user"}})
    assert ev.seq == 1
    assert ev.type == "message"
    assert ev.cursor == "E:1" == hub.cursor
    assert ev.data == {
        "type": "message",
        "conversationId": "c1",
        "epoch": "E",
        "seq": 1,
        "message": {"id": "u1", "role": "user"},
    }
    assert ev.json == orjson.dumps(ev.data)
    assert ev.frames == {}
    t = tok(hub, "hi")
    assert (t.seq, t.message_id, t.text) == (2, "m1", "hi")
    assert "merged" not in t.data


def test_default_epoch_is_random_and_opaque() -> None:
    a, b = EventLog("c"), EventLog("c")
    assert a.epoch and b.epoch and a.epoch != b.epoch
    assert ":" not in a.epoch


@pytest.mark.parametrize("key", ["type", "seq", "epoch", "conversationId", "merged"])
def test_append_rejects_reserved_keys_without_consuming_a_seq(key: str) -> None:
    hub = EventLog("c", epoch="E")
    with pytest.raises(ValueError):
        hub.append("tool", {key: 1})
    assert hub.last_seq == 0


def test_append_rejects_bad_token_and_unserialisable_data() -> None:
    hub = EventLog("c", epoch="E")
    with pytest.raises(TypeError):
        hub.append("token", {"messageId": "m", "text": 3})
    with pytest.raises(TypeError):
        hub.append("tool", {"payload": object()})
    assert hub.last_seq == 0
    assert list(hub.held()) == []


# --- subscribe / replay / reset -------------------------------------------------------


def test_subscribe_live_from_now() -> None:
    hub = EventLog("c", epoch="E")
    hub.append("presence", {"viewers": 1})
    sub = sub_of(hub)
    assert sub.recovered and sub.start_seq == 1 and sub.take() == []
    hub.append("presence", {"viewers": 2})
    assert seqs(sub.take()) == [2]


def test_replay_from_valid_cursor_then_live() -> None:
    hub = EventLog("c", epoch="E")
    for i in range(5):
        hub.append("presence", {"viewers": i})
    sub = sub_of(hub, "E:2")
    assert sub.recovered and sub.start_seq == 5
    hub.append("presence", {"viewers": 9})
    assert seqs(sub.take()) == [3, 4, 5, 6]
    # the replayed events are the stored ones: their frame caches are shared
    assert hub.replay(Cursor("E", 2))[0] is next(e for e in hub.held() if e.seq == 3)  # type: ignore[index]


def test_cursor_at_head_recovers_with_nothing_to_replay() -> None:
    hub = EventLog("c", epoch="E")
    hub.append("presence", {"viewers": 1})
    for after in ("E:1", Cursor("E", 1)):
        sub = sub_of(hub, after)
        assert sub.recovered and sub.take() == []
    empty = EventLog("c", epoch="E")
    assert sub_of(empty, "E:0").recovered


def _assert_reset_first(hub: EventLog, sub: Subscription) -> None:
    assert not sub.recovered
    first = sub.take()
    assert len(first) == 1
    reset = first[0]
    assert reset.type == "reset"
    assert reset.seq == hub.last_seq
    assert reset.data == {
        "type": "reset",
        "conversationId": hub.conversation_id,
        "epoch": hub.epoch,
        "seq": hub.last_seq,
    }
    assert reset.json == orjson.dumps(reset.data)
    assert reset.cursor == hub.cursor


@pytest.mark.parametrize("after", ["OTHER:1", "E:99", "garbage", Cursor("E", -1)])
def test_unreplayable_cursor_gets_reset_then_live(after: str | Cursor) -> None:
    hub = EventLog("c", epoch="E")
    hub.append("presence", {"viewers": 1})
    hub.append("presence", {"viewers": 2})
    sub = sub_of(hub, after)
    _assert_reset_first(hub, sub)
    hub.append("presence", {"viewers": 3})
    assert seqs(sub.take()) == [3]
    # the reset is not part of the log and took no seq
    assert hub.last_seq == 3
    assert [e.type for e in hub.held()] == ["presence"] * 3


def test_cursor_that_fell_out_of_buffer_gets_reset() -> None:
    hub = EventLog("c", epoch="E", buffer_limit=3)
    for i in range(6):
        hub.append("presence", {"viewers": i})
    assert seqs(list(hub.held())) == [4, 5, 6]
    assert hub.replay(Cursor("E", 3)) is not None
    assert hub.replay(Cursor("E", 2)) is None  # all or nothing: 3 is gone
    _assert_reset_first(hub, sub_of(hub, "E:2"))
    assert seqs(sub_of(hub, "E:3").take()) == [4, 5, 6]


def test_replay_is_not_counted_against_the_bound() -> None:
    hub = EventLog("c", epoch="E")
    for i in range(10):
        hub.append("presence", {"viewers": i})
    sub = hub.subscribe("E:0", notify=lambda: None, max_events=2)
    hub.append("presence", {"viewers": 10})
    assert not sub.overflowed
    assert seqs(sub.take()) == list(range(1, 12))


# --- retention across generations -----------------------------------------------------


def _generation(hub: EventLog, mid: str) -> tuple[int, int]:
    """Append one whole send; return (seq of its user message, seq of its init)."""
    msg = hub.append("message", {"message": {"id": "u" + mid}})
    init = hub.append("init", {"messageId": mid})
    tok(hub, "a", mid)
    tok(hub, "b", mid)
    hub.append("done", {"messageId": mid, "fullText": "ab"})
    return msg.seq, init.seq


def test_buffer_keeps_current_and_previous_generation_with_lead_in() -> None:
    hub = EventLog("c", epoch="E")
    g1_msg, _ = _generation(hub, "g1")
    g2_msg, _ = _generation(hub, "g2")
    hub.append("presence", {"viewers": 3})  # between generations: part of g3's lead-in
    # two generations so far: nothing dropped yet
    assert hub.replay(Cursor("E", g1_msg - 1)) is not None
    g3_msg, _ = _generation(hub, "g3")
    # g3 started: g1 may go, g2 (from its user message on) must stay
    assert hub.replay(Cursor("E", g2_msg - 1)) is not None
    assert hub.replay(Cursor("E", g1_msg - 1)) is None
    assert seqs(list(hub.held()))[0] == g2_msg
    _generation(hub, "g4")
    assert seqs(list(hub.held()))[0] == g3_msg - 1  # the presence event led into g3


def test_generation_without_terminal_keeps_from_its_init() -> None:
    hub = EventLog("c", epoch="E")
    hub.append("init", {"messageId": "a"})
    tok(hub, "x", "a")  # crashed: no terminal
    second = hub.append("init", {"messageId": "b"}).seq
    hub.append("init", {"messageId": "c"})
    assert seqs(list(hub.held()))[0] == 2  # right after the first init
    assert hub.replay(Cursor("E", second - 1)) is not None


def test_buffer_limit_caps_even_within_a_generation() -> None:
    hub = EventLog("c", epoch="E", buffer_limit=4)
    hub.append("init", {"messageId": "a"})
    for i in range(10):
        tok(hub, str(i), "a")
    assert seqs(list(hub.held())) == [8, 9, 10, 11]


# --- delivery: notify, direct, pause --------------------------------------------------


def test_notify_once_per_wakeup() -> None:
    hub = EventLog("c", epoch="E")
    sink = Sink()
    sub = hub.subscribe(None, notify=sink.notify)
    for i in range(3):
        hub.append("presence", {"viewers": i})
    assert sink.notified == 1
    assert seqs(sub.take()) == [1, 2, 3]
    assert sub.take() == []
    hub.append("presence", {"viewers": 9})
    assert sink.notified == 2
    assert sub.pending() == 1


def test_subscribe_never_calls_back_and_prefilled_queue_still_wakes() -> None:
    hub = EventLog("c", epoch="E")
    hub.append("presence", {"viewers": 1})
    sink = Sink()
    sub = hub.subscribe("E:0", notify=sink.notify, direct=sink.direct)
    assert sink.notified == 0 and sink.written == [] and sub.pending() == 1
    hub.append("presence", {"viewers": 2})  # queued behind the replay, not written
    assert sink.written == [] and sink.notified == 1
    assert seqs(sub.take()) == [1, 2]
    hub.append("presence", {"viewers": 3})  # queue empty again: direct
    assert seqs(sink.written) == [3]


def test_direct_path_queues_nothing() -> None:
    hub = EventLog("c", epoch="E")
    sink = Sink()
    sub = hub.subscribe(None, notify=sink.notify, direct=sink.direct)
    for i in range(5):
        tok(hub, str(i))
    assert seqs(sink.written) == [1, 2, 3, 4, 5]
    assert sub.pending() == 0 and sink.notified == 0
    assert sink.written[0] is next(iter(hub.held()))  # the shared event, not a copy


def test_direct_paused_queues_until_take_then_resumes() -> None:
    hub = EventLog("c", epoch="E")
    sink = Sink()
    sub = hub.subscribe(None, notify=sink.notify, direct=sink.direct)
    hub.append("presence", {"viewers": 1})
    sink.paused = True
    hub.append("presence", {"viewers": 2})  # refused: queued, pump woken
    assert sink.notified == 1
    sink.paused = False
    # still queued even though the sink would accept: order must be kept
    hub.append("presence", {"viewers": 3})
    assert seqs(sink.written) == [1]
    assert sink.notified == 1
    assert seqs(sub.take()) == [2, 3]
    hub.append("presence", {"viewers": 4})
    assert seqs(sink.written) == [1, 4]
    assert sub.pending() == 0


# --- merging --------------------------------------------------------------------------


def test_lagging_tokens_of_one_message_merge() -> None:
    hub = EventLog("c", epoch="E")
    sub = sub_of(hub)
    hub.append("init", {"messageId": "m1"})
    for piece in ("He", "llo", ", ", "world"):
        tok(hub, piece)
    assert sub.pending() == 2
    init, merged = sub.take()
    assert init.seq == 1
    assert merged.type == "token"
    assert merged.seq == 5 and merged.cursor == "E:5"
    assert merged.text == "Hello, world" and merged.message_id == "m1"
    assert merged.data == {
        "type": "token",
        "conversationId": "c",
        "epoch": "E",
        "seq": 5,
        "messageId": "m1",
        "text": "Hello, world",
        "merged": 4,
    }
    assert merged.json == orjson.dumps(merged.data)
    assert merged.seq - merged.data["merged"] == init.seq  # type: ignore[operator]
    # the log itself keeps the original tokens
    assert [e.text for e in hub.held() if e.type == "token"] == ["He", "llo", ", ", "world"]


def test_merge_only_same_message_and_adjacent() -> None:
    hub = EventLog("c", epoch="E")
    sub = sub_of(hub)
    tok(hub, "a", "m1")
    tok(hub, "b", "m2")
    tok(hub, "c", "m2")
    hub.append("tool", {"messageId": "m2", "tool": "x", "payload": {}})
    tok(hub, "d", "m2")
    got = sub.take()
    assert [(e.type, e.seq, e.text, e.data.get("merged")) for e in got] == [
        ("token", 1, "a", None),
        ("token", 3, "bc", 2),
        ("tool", 4, "", None),
        ("token", 5, "d", None),
    ]


def test_single_queued_token_is_not_marked_merged() -> None:
    hub = EventLog("c", epoch="E")
    sub = sub_of(hub)
    original = tok(hub, "x")
    (got,) = sub.take()
    assert got is original and "merged" not in got.data


def test_live_tokens_merge_into_replayed_tail() -> None:
    hub = EventLog("c", epoch="E")
    tok(hub, "a")
    tok(hub, "b")
    sub = sub_of(hub, "E:0")
    tok(hub, "c")
    got = sub.take()
    assert [(e.seq, e.text, e.data.get("merged")) for e in got] == [
        (1, "a", None),
        (3, "bc", 2),
    ]


# --- bound and overflow ---------------------------------------------------------------


def test_overflow_by_count_resets_and_continues_live() -> None:
    hub = EventLog("c", epoch="E")
    sink = Sink()
    sub = hub.subscribe(None, notify=sink.notify, max_events=3)
    for i in range(3):
        hub.append("presence", {"viewers": i})
    assert not sub.overflowed and sub.pending() == 3
    hub.append("presence", {"viewers": 3})  # the 4th pending entry: past the bound
    assert sub.overflowed and sub.pending() == 1
    hub.append("presence", {"viewers": 4})
    got = sub.take()
    assert [(e.type, e.seq) for e in got] == [("reset", 4), ("presence", 5)]
    assert sink.notified == 1
    assert sub.overflowed  # sticky: the WebSocket transport closes with 4008


def test_bound_is_counted_after_merging() -> None:
    hub = EventLog("c", epoch="E")
    sub = hub.subscribe(None, notify=lambda: None, max_events=2)
    for i in range(50):
        tok(hub, str(i % 10))
    assert not sub.overflowed
    (merged,) = sub.take()
    assert merged.data["merged"] == 50 and merged.seq == 50


def test_overflow_by_bytes_including_merge_growth() -> None:
    hub = EventLog("c", epoch="E")
    sub = hub.subscribe(None, notify=lambda: None, max_bytes=1000)
    hub.append("init", {"messageId": "m1"})
    for _ in range(10):  # ~70 + ~110 + 9 * 40 bytes: under the bound
        tok(hub, "x" * 40)
    assert not sub.overflowed and sub.pending() == 2
    for _ in range(15):  # the merged entry keeps growing: over it
        tok(hub, "x" * 40)
    assert sub.overflowed
    reset, *rest = sub.take()
    assert reset.type == "reset"
    # live tokens after the reset continue from it, merged
    assert [e.type for e in rest] == ["token"]
    merged = rest[0].data.get("merged", 1)
    assert isinstance(merged, int)
    assert rest[0].seq == hub.last_seq
    assert rest[0].seq - merged == reset.seq


def test_single_oversized_event_is_not_an_overflow() -> None:
    hub = EventLog("c", epoch="E")
    sub = hub.subscribe(None, notify=lambda: None, max_bytes=100)
    hub.append("done", {"messageId": "m", "fullText": "y" * 1000})
    assert not sub.overflowed
    assert seqs(sub.take()) == [1]


def test_slow_subscriber_does_not_affect_others() -> None:
    hub = EventLog("c", epoch="E")
    slow = hub.subscribe(None, notify=lambda: None, max_events=2)
    fast = Sink()
    hub.subscribe(None, notify=fast.notify, direct=fast.direct)
    for i in range(10):
        hub.append("presence", {"viewers": i})
    assert seqs(fast.written) == list(range(1, 11))
    assert slow.overflowed


def test_overflowing_subscribers_share_one_reset_event() -> None:
    hub = EventLog("c", epoch="E")
    subs = [hub.subscribe(None, notify=lambda: None, max_events=1) for _ in range(3)]
    hub.append("presence", {"viewers": 1})
    hub.append("presence", {"viewers": 2})
    resets = [s.take()[0] for s in subs]
    assert all(r is resets[0] for r in resets)


# --- failures and lifecycle -----------------------------------------------------------


def test_raising_callbacks_are_isolated() -> None:
    hub = EventLog("c", epoch="E")

    def boom(_: Event) -> bool:
        raise RuntimeError("socket gone")

    def boom_notify() -> None:
        raise RuntimeError("loop gone")

    bad_direct = hub.subscribe(None, notify=lambda: None, direct=boom)
    bad_notify = hub.subscribe(None, notify=boom_notify)
    good = Sink()
    good_sub = hub.subscribe(None, notify=good.notify, direct=good.direct)
    assert hub.subscriber_count == 3
    ev = hub.append("presence", {"viewers": 3})
    assert ev.seq == 1
    assert seqs(good.written) == [1]
    assert bad_direct.closed and isinstance(bad_direct.error, RuntimeError)
    assert bad_notify.closed and isinstance(bad_notify.error, RuntimeError)
    assert not good_sub.closed and good_sub.error is None
    assert hub.subscriber_count == 1
    hub.append("presence", {"viewers": 1})
    assert seqs(good.written) == [1, 2]


def test_unsubscribe_is_idempotent_and_frees_the_queue() -> None:
    hub = EventLog("c", epoch="E")
    sub = sub_of(hub)
    hub.append("presence", {"viewers": 1})
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)
    assert sub.closed and hub.subscriber_count == 0 and sub.take() == []
    hub.append("presence", {"viewers": 2})
    assert sub.take() == []


def test_callbacks_may_unsubscribe_and_subscribe_during_fanout() -> None:
    hub = EventLog("c", epoch="E")
    late: list[Subscription] = []
    other = Sink()

    def leave(event: Event) -> bool:
        hub.unsubscribe(victim)
        late.append(hub.subscribe(None, notify=lambda: None))
        return True

    hub.subscribe(None, notify=lambda: None, direct=leave)
    victim = hub.subscribe(None, notify=other.notify, direct=other.direct)
    hub.append("presence", {"viewers": 1})
    assert other.written == [] and victim.closed and victim.pending() == 0
    hub.append("presence", {"viewers": 2})
    assert seqs(late[0].take()) == [2]  # joined at seq 1: no duplicate of it


def test_append_from_a_callback_is_refused_without_breaking_the_fanout() -> None:
    hub = EventLog("c", epoch="E")

    def reenter(event: Event) -> bool:
        hub.append("presence", {"viewers": 0})
        return True

    bad = hub.subscribe(None, notify=lambda: None, direct=reenter)
    good = Sink()
    hub.subscribe(None, notify=good.notify, direct=good.direct)
    hub.append("presence", {"viewers": 1})
    assert hub.last_seq == 1 and seqs(good.written) == [1]
    assert bad.closed and isinstance(bad.error, RuntimeError)


def test_close_drops_everyone_but_keeps_pending_events() -> None:
    hub = EventLog("c", epoch="E")
    sink = Sink()
    sub = hub.subscribe(None, notify=sink.notify)
    hub.append("error", {"code": "server_shutdown", "error": "bye"})
    sink.notified = 0
    hub.close()
    assert sub.closed and hub.subscriber_count == 0 and hub.closed
    assert sink.notified == 1  # woken so the pump can flush and exit
    assert [e.type for e in sub.take()] == ["error"]
    with pytest.raises(RuntimeError):
        hub.append("presence", {"viewers": 0})
    late = sub_of(hub)
    assert late.closed and not late.recovered


def test_invalid_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        EventLog("c", max_events=0)
    with pytest.raises(ValueError):
        EventLog("c", epoch="")
    with pytest.raises(ValueError):
        EventLog("c", epoch="E").subscribe(None, notify=lambda: None, max_bytes=0)


def test_resume_cursor_is_the_event_before_the_answers_init() -> None:
    hub = EventLog("c1")
    hub.append("message", {"message": {"id": "u1"}})
    first = hub.append("init", {"messageId": "a1"})
    tok(hub, "old ", "a1")
    hub.append("done", {"messageId": "a1", "fullText": "old "})
    hub.append("message", {"message": {"id": "u2"}})
    init = hub.append("init", {"messageId": "a2"})
    tokens = [tok(hub, t, "a2") for t in ("one ", "two ")]
    assert hub.resume_cursor("a2") == f"{hub.epoch}:{init.seq - 1}"
    assert hub.resume_cursor("a1") == f"{hub.epoch}:{first.seq - 1}"  # previous: still held
    assert hub.resume_cursor("nope") is None
    cursor = Cursor.parse(hub.resume_cursor("a2") or "")
    assert cursor is not None
    replay = hub.replay(cursor)
    assert replay is not None and replay[0].seq == init.seq
    assert "".join(e.text for e in replay if e.type == "token") == "".join(e.text for e in tokens)
    # Two generations later the first one's init is trimmed: no cursor for it.
    hub.append("done", {"messageId": "a2", "fullText": "one two "})
    hub.append("init", {"messageId": "a3"})
    assert hub.resume_cursor("a1") is None


# --- the hooks a log written elsewhere uses (cluster mode's mirror) -------------------


def test_rebase_resets_every_subscriber_at_the_new_position_and_drops_replay() -> None:
    hub = EventLog("c1", epoch="e1")
    hub.append("message", {"text": "hi"})
    hub.append("init", {"messageId": "m1", "generationId": "g1"})
    tok(hub, "a")
    old_cursor = hub.cursor
    sink = Sink(paused=True)
    live = hub.subscribe(None, notify=sink.notify, direct=sink.direct)
    assert hub.floor == 1

    hub.rebase("e2", 40)

    assert (hub.epoch, hub.last_seq, hub.floor) == ("e2", 40, 40)
    assert list(hub.held()) == []
    (reset,) = live.take()
    assert (reset.type, reset.seq, reset.cursor) == ("reset", 40, "e2:40")
    assert sink.notified == 1 and not live.overflowed and not live.closed
    assert hub.subscribe(old_cursor, notify=lambda: None).recovered is False
    # The log goes on from the new position; a generation there trims as before.
    event = hub.append("init", {"messageId": "m2", "generationId": "g2"})
    assert (event.seq, event.cursor) == (41, "e2:41")
    assert seqs(live.take()) == [41]
    assert hub.floor == 41


def test_a_plain_hub_has_no_live_answer_of_its_own() -> None:
    hub = EventLog("c1")
    hub.append("init", {"messageId": "m1", "generationId": "g1"})
    tok(hub, "streaming")
    assert hub.live_answer() is None  # in one process the actor's generation answers
