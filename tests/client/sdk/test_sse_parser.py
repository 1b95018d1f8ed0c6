"""The library's SSE parser (client/sdk/sse_parser.py) against the WHATWG event-stream rules:
the spec's examples, a property test (any stream written by the rules, in any line
endings, cut into any chunks, parses back to the events it was written from), and a
differential test against httpx-sse, a well-kept SSE parser from PyPI, fed the same bytes
through its public API.

Where httpx-sse departs from the spec the differential test stays off that ground, and
:func:`test_where_httpx_sse_departs_from_the_spec` pins what it does instead: it
dispatches a block that has no ``data`` line (an ``id``-only or ``event``-only block),
which the spec says not to dispatch; it takes ``retry`` values that are not all ASCII
digits (``int(" 5")``); and it leaves a leading BOM in the first field name.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from client.sdk.sse_parser import SSEEvent, SSEParser


def parse(*chunks: bytes) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events, parser


def test_spec_examples() -> None:
    # html.spec.whatwg.org, "Server-sent events", the examples of "Parsing an event stream"
    events, _ = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert [e.data for e in events] == ["YHOO\n+2\n10"]
    events, _ = parse(
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    assert [(e.data, e.last_event_id) for e in events] == [
        ("first event", "1"),
        ("second event", ""),
        (" third event", ""),
    ]
    events, _ = parse(b"data\n\ndata\ndata\n\ndata:")
    assert [e.data for e in events] == ["", "\n"]  # the last, unterminated, is dropped
    events, _ = parse(b"data:test\n\ndata: test\n\n")
    assert [e.data for e in events] == ["test", "test"]


def test_line_endings_bom_nul_and_retry() -> None:
    events, parser = parse(
        b"\xef\xbb\xbfretry: 2000\r\n\r\nid: e:1\revent: token\r",
        b'\ndata: {"a":1}\r\n\r\nretry: soon\n: ping\n\n',
    )
    assert events == [SSEEvent("token", '{"a":1}', "e:1")]
    assert parser.retry == 2000  # "soon" is not digits: ignored
    events, parser = parse(b"id: a\0b\ndata: x\n\n")  # an id holding NUL is ignored
    assert events[0].last_event_id == "" and parser.last_event_id == ""
    events, _ = parse(b"event: a\n\ndata: b\n\n")  # no data: not dispatched, type reset
    assert events == [SSEEvent("message", "b", "")]
    events, _ = parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n")  # only one BOM is dropped
    assert events == []  # the second makes the field name "\ufeffdata": unknown
    events, parser = parse(b"retry: 1e3\n\nretry: -5\n\nretry:  7\n\n")
    assert parser.retry is None


def test_utf8_split_anywhere() -> None:
    raw = "data: héllo — “wörld” 🎉\r\n\r\n".encode()
    for cut in range(len(raw) + 1):
        events, _ = parse(raw[:cut], raw[cut:])
        assert [e.data for e in events] == ["héllo — “wörld” 🎉"], cut


# --- property: written by the rules, read back ------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One event as a server may write it."""

    data: tuple[str, ...]
    event: str | None
    id: str | None
    comments: tuple[str, ...]


_line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=12
)
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=8)
blocks = st.builds(
    Block,
    data=st.lists(_line_text, min_size=1, max_size=3).map(tuple),
    event=st.none() | _name,
    id=st.none() | _line_text.filter(lambda s: "\0" not in s),
    comments=st.lists(_line_text, max_size=2).map(tuple),
)
endings = st.sampled_from(["\n", "\r", "\r\n"])


def write(block: Block, end: str, draw_space: bool) -> str:
    sep = ": " if draw_space else ":"
    lines = [f":{c}" for c in block.comments]
    # A value starting with a space needs the separator's space so that it survives.
    if block.event is not None:
        lines.append(
            f"event: {block.event}" if block.event.startswith(" ") else f"event{sep}{block.event}"
        )
    if block.id is not None:
        lines.append(f"id: {block.id}" if block.id.startswith(" ") else f"id{sep}{block.id}")
    lines += [f"data: {d}" if d.startswith(" ") else f"data{sep}{d}" for d in block.data]
    return "".join(line + end for line in lines) + end


def expected(stream: list[Block]) -> list[SSEEvent]:
    out: list[SSEEvent] = []
    last_id = ""
    for block in stream:
        if block.id is not None:
            last_id = block.id
        out.append(SSEEvent(block.event or "message", "\n".join(block.data), last_id))
    return out


def chunked(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    return [raw[a:b] for a, b in itertools.pairwise([0, *points, len(raw)])]


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(blocks, max_size=5),
    end=endings,
    space=st.booleans(),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_property_round_trip(
    stream: list[Block], end: str, space: bool, bom: bool, cuts: list[int]
) -> None:
    text = "".join(write(block, end, space) for block in stream)
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    events, _ = parse(*chunked(raw, cuts))
    assert events == expected(stream)


# --- differential: httpx-sse -------------------------------------------------------------------


async def httpx_sse_events(chunks: list[bytes]) -> list[SSEEvent]:
    """What httpx-sse's public API makes of ``chunks``, arriving as they are cut."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    # utf-8-sig: the decoder drops one leading BOM, as the spec's stream decoding does.
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream; charset=utf-8-sig"}, content=body()
    )
    return [
        SSEEvent(sse.event, sse.data, sse.id) async for sse in EventSource(response).aiter_sse()
    ]


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(blocks, max_size=5),
    ends=st.lists(endings, min_size=1, max_size=5),
    space=st.booleans(),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    noise=st.lists(st.sampled_from(["retry: 3000", "bogus: x", "id: a\0b", ":"]), max_size=3),
)
async def test_differential_against_httpx_sse(
    stream: list[Block],
    ends: list[str],
    space: bool,
    bom: bool,
    cuts: list[int],
    noise: list[str],
) -> None:
    # Mixed line endings (one per block), and lines both parsers ignore alike.
    text = "".join(
        "".join(n + end for n in noise) + write(block, end, space)
        for block, end in zip(stream, itertools.cycle(ends), strict=False)
    )
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    chunks = chunked(raw, cuts)
    ours, _ = parse(*chunks)
    theirs = await httpx_sse_events(chunks)
    assert ours == theirs
    assert ours == expected(stream)


async def test_where_httpx_sse_departs_from_the_spec() -> None:
    raw = b"id: 7\n\nevent: x\n\nretry:  5\n\ndata: d\n\n"
    ours, parser = parse(raw)
    assert ours == [SSEEvent("message", "d", "7")] and parser.retry is None

    async def body() -> AsyncIterator[bytes]:
        yield raw

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    theirs = [sse async for sse in EventSource(response).aiter_sse()]
    # httpx-sse dispatches the data-less blocks too (the spec: "If the data buffer is an
    # empty string, set the data buffer and the event type buffer to the empty string and
    # return"), and takes "retry:  5" (not all ASCII digits) as 5.
    assert [(e.event, e.data, e.id, e.retry) for e in theirs] == [
        ("message", "", "7", None),
        ("x", "", "7", None),
        ("message", "", "7", 5),
        ("message", "d", "7", None),
    ]
