"""The CLI's SSE parser against the WHATWG event-stream rules: examples from the spec, and a
property test that any stream written by the rules, cut into any chunks, parses back to
the events it was written from."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from client.sse import ServerSentEvent, SSEParser


def parse(*chunks: bytes) -> tuple[list[ServerSentEvent], SSEParser]:
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


def test_spec_examples() -> None:
    # html.spec.whatwg.org, "Server-sent events", the examples of §9.2.6
    events, _ = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert [e.data for e in events] == ["YHOO\n+2\n10"]
    events, parser = parse(
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    assert [(e.data, e.last_event_id) for e in events] == [
        ("first event", "1"),
        ("second event", ""),
        (" third event", ""),
    ]
    assert parser.comments == 1
    events, _ = parse(b"data\n\ndata\ndata\n\ndata:")
    assert [e.data for e in events] == ["", "\n"]  # the last, unterminated, is dropped
    events, _ = parse(b"data:test\n\ndata: test\n\n")
    assert [e.data for e in events] == ["test", "test"]


def test_cursor_event_retry_bom_and_line_endings() -> None:
    events, parser = parse(
        b"\xef\xbb\xbfretry: 2000\r\n\r\nid: e:1\revent: token\r",
        b'\ndata: {"a":1}\r\n\r\nretry: soon\n: ping\n\n',
    )
    assert events == [ServerSentEvent("token", '{"a":1}', "e:1")]
    assert parser.retry == 2000  # "soon" is not digits: ignored
    assert parser.last_event_id == "e:1"
    events, parser = parse(b"id: a\0b\ndata: x\n\n")  # an id with NUL is ignored
    assert events[0].last_event_id == "" and parser.last_event_id == ""
    events, _ = parse(b"event: a\n\ndata: b\n\n")  # no data: not dispatched, type reset
    assert events == [ServerSentEvent("message", "b", "")]


def test_utf8_split_across_chunks() -> None:
    raw = "data: héllo — “wörld” 🎉\n\n".encode()
    for cut in range(len(raw)):
        events, _ = parse(raw[:cut], raw[cut:])
        assert [e.data for e in events] == ["héllo — “wörld” 🎉"]


# -- the property --------------------------------------------------------------------------

# Field values cannot hold CR or LF (they end lines); NUL in an id makes it ignored.
value = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
name = st.text(st.characters(codec="utf-8", exclude_characters="\r\n:\ufeff"), min_size=1).filter(
    lambda n: n not in ("data", "event", "id", "retry")
)


@dataclass
class Written:
    event: str | None
    data: list[str]  # no data lines: nothing is dispatched
    id: str | None
    retry: int | None
    comments: list[str]
    unknown: list[tuple[str, str]]


written = st.builds(
    Written,
    event=st.none() | value,
    data=st.lists(value, max_size=4),
    id=st.none() | value,
    retry=st.none() | st.integers(0, 10**9),
    comments=st.lists(value, max_size=2),
    unknown=st.lists(st.tuples(name, value), max_size=2),
)


def field(draw: st.DrawFn, key: str, val: str) -> str:
    # "key:value" is the same as "key: value" unless the value starts with a space.
    if val.startswith(" ") or draw(st.booleans()):
        return f"{key}: {val}"
    return f"{key}:{val}"


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Written], list[int]]:
    events = draw(st.lists(written, max_size=6))
    eol = st.sampled_from(["\n", "\r", "\r\n"])
    lines: list[str] = []
    for ev in events:
        others: list[str] = [":" + c for c in ev.comments]
        others += [field(draw, k, v) for k, v in ev.unknown]
        if ev.event is not None:
            others.append(field(draw, "event", ev.event))
        if ev.id is not None:
            others.append(field(draw, "id", ev.id))
        if ev.retry is not None:
            others.append(f"retry: {ev.retry}")
        data = [field(draw, "data", d) if d or draw(st.booleans()) else "data" for d in ev.data]
        # data lines keep their order among themselves; the other lines go anywhere
        slots = draw(st.permutations([True] * len(data) + [False] * len(others)))
        data_it, others_it = iter(data), iter(others)
        parts = [next(data_it) if is_data else next(others_it) for is_data in slots]
        for line in [*parts, ""]:
            end = draw(eol)
            if not line and lines and lines[-1].endswith("\r") and end.startswith("\n"):
                end = "\r"  # CR then LF would be one CRLF: a writer never means two ends so
            lines.append(line + end)
    text = "".join(lines)
    if draw(st.booleans()):
        text = "\ufeff" + text
    raw = text.encode("utf-8")
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    return raw, events, cuts


@settings(max_examples=400, deadline=None)
@given(streams())
def test_any_stream_in_any_chunks_parses_to_what_was_written(
    case: tuple[bytes, list[Written], list[int]],
) -> None:
    raw, written_events, cuts = case
    bounds = [0, *cuts, len(raw)]
    events, parser = parse(*(raw[a:b] for a, b in itertools.pairwise(bounds)))
    expected: list[ServerSentEvent] = []
    last_id = ""
    retry: int | None = None
    for ev in written_events:
        if ev.id is not None and "\0" not in ev.id:
            last_id = ev.id
        if ev.retry is not None:
            retry = ev.retry
        if ev.data:
            expected.append(ServerSentEvent(ev.event or "message", "\n".join(ev.data), last_id))
    assert events == expected
    assert parser.last_event_id == last_id
    assert parser.retry == retry
    assert parser.comments == sum(len(ev.comments) for ev in written_events)
