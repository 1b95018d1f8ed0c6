"""Property-based tests of the wire parsers and renderers.

The WebSocket frame parser must turn any text into a frame or a ``FrameError`` (never an
exception of another kind); SSE and NDJSON frames rendered by the server must parse back,
with an independent parser, to exactly the event that was published.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.event_log import EventLog
from server.transports.ndjson import NdjsonRenderer
from server.transports.protocol import (
    Cancel,
    FrameError,
    Ping,
    Send,
    Subscribe,
    Switch,
    Unsubscribe,
    parse_frame,
)
from server.transports.sse import sse_chunked, sse_frame
from server.transports.wire import ws_text_frame

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
frame_types = st.sampled_from(
    [
        *("subscribe", "unsubscribe", "send", "cancel", "ping"),
        *("regenerate", "edit", "continue", "switch", "x", ""),
    ]
)


@st.composite
def frames(draw: st.DrawFn) -> str:
    body = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "conversationId",
                    "after",
                    "message",
                    "aiModel",
                    "tools",
                    "clientMessageId",
                    "generationId",
                    "messageId",
                    "extra",
                ]
            ),
            json_values,
            max_size=6,
        )
    )
    if draw(st.booleans()):
        body["type"] = draw(frame_types)
    return orjson.dumps(body).decode()


@settings(max_examples=400, deadline=None)
@given(st.one_of(frames(), st.text(max_size=200)))
def test_parse_frame_total(text: str) -> None:
    try:
        frame = parse_frame(text)
    except FrameError as exc:
        assert exc.code in {"invalid_json", "invalid_frame", "unknown_type"}
        assert exc.message
        return
    assert isinstance(frame, Subscribe | Unsubscribe | Send | Switch | Cancel | Ping)
    if isinstance(frame, Send):
        # A send or an edit carries text; a regenerate or continue names its message.
        if frame.action in ("send", "edit"):
            assert frame.request.message.strip()
        else:
            assert frame.request.message == ""
        if frame.action != "send":
            assert frame.target and len(frame.target) <= 64
            assert frame.request.conversationId
    if isinstance(frame, Switch):
        assert frame.message_id and len(frame.message_id) <= 64
    if isinstance(frame, Subscribe):
        assert frame.conversation_id and len(frame.conversation_id) <= 64


#: Any text but U+0000, which no frame may carry (PostgreSQL text cannot hold it).
_NO_NUL = st.characters(blacklist_characters="\x00")


@given(
    conversation=st.text(_NO_NUL, min_size=1, max_size=30),
    cursor=st.one_of(st.none(), st.text(_NO_NUL, min_size=1, max_size=40)),
)
def test_subscribe_round_trip(conversation: str, cursor: str | None) -> None:
    frame = {"type": "subscribe", "conversationId": conversation}
    if cursor is not None:
        frame["after"] = cursor
    parsed = parse_frame(orjson.dumps(frame).decode())
    assert parsed == Subscribe(conversation, cursor)


@given(before=st.text(max_size=10), after=st.text(max_size=10))
def test_nul_in_a_frame_is_refused(before: str, after: str) -> None:
    frame = {"type": "subscribe", "conversationId": f"{before}\x00{after}"}
    try:
        parse_frame(orjson.dumps(frame).decode())
    except FrameError as exc:
        assert exc.code == "invalid_frame" and exc.message.startswith("conversationId: ")
    else:
        raise AssertionError("a NUL was accepted")


def _parse_sse(raw: bytes) -> dict[str, str]:
    """Independent WHATWG-style parse of one SSE frame."""
    assert raw.endswith(b"\n\n")
    fields: dict[str, str] = {}
    for line in raw.decode("utf-8")[:-2].split("\n"):
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    return fields


def _unchunk(raw: bytes) -> bytes:
    size, _, rest = raw.partition(b"\r\n")
    body = rest[: int(size, 16)]
    assert rest[int(size, 16) :] == b"\r\n"
    return body


texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, min_size=1, max_size=20))
def test_sse_ndjson_ws_frames_parse_back(pieces: list[str]) -> None:
    hub = EventLog("c1")
    renderer = NdjsonRenderer("c1", chunked=False)
    for text in pieces:
        event = hub.append("token", {"messageId": "m1", "text": text})
        fields = _parse_sse(sse_frame(event))
        assert fields["id"] == event.cursor and fields["event"] == "token"
        assert orjson.loads(fields["data"]) == event.data
        assert _unchunk(sse_chunked(event)) == sse_frame(event)
        line = renderer(event)
        assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1
        assert orjson.loads(line) == {"topic": "token", "data": text}
        frame = ws_text_frame(event.json)
        assert frame[0] == 0x81
        size = frame[1]
        offset = 2
        if size == 126:
            size, offset = int.from_bytes(frame[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(frame[2:10], "big"), 10
        assert frame[offset:] == event.json and len(event.json) == size
    cancelled = hub.append("cancelled", {"messageId": "m1", "generationId": "g"})
    line = renderer(cancelled)
    assert line is not None
    assert orjson.loads(line)["data"]["fullText"] == "".join(pieces)
