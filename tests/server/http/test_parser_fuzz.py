"""Hypothesis fuzzers for the parsers a client feeds directly, beside the frame parser's
(tests/server/transports/test_protocol_properties.py) and the hub cursor's
(tests/actors/test_hub_properties.py):

- the SSE resume cursor as it arrives (``Last-Event-ID`` / ``?after=``: any header text),
  and the conversation list's opaque ``?cursor=``;
- the device flow's body parser (``read_oauth``: JSON or form, any bytes, any charset) and
  its user-code normaliser.

Each must answer any input with a value or the contract's 400, never another exception.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from unittest import mock

from aiohttp import streams
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.event_log import Cursor
from server.auth.device_flow import ALPHABET, USER_CODE_LEN, display, normalize
from server.auth.device_routes import DecisionRequest, TokenRequest
from server.auth.oauth_bodies import read_oauth
from server.core.errors import ApiError
from server.routes.conversations import _decode_cursor, _encode_cursor

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
    max_size=120,
)
cursor_like = st.builds(
    lambda epoch, digits: f"{epoch}:{digits}",
    st.text(max_size=20),
    st.text(alphabet="0123456789٣¹ -+_", max_size=24),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(header_text, cursor_like))
def test_sse_cursor_parse_is_total(text: str) -> None:
    cursor = Cursor.parse(text)
    if cursor is None:
        return
    assert cursor.epoch and 0 <= cursor.seq < 10**18
    assert Cursor.parse(str(cursor)) == cursor
    assert str(cursor) == text.rpartition(":")[0] + ":" + str(cursor.seq)


@settings(max_examples=500, deadline=None)
@given(st.one_of(header_text, st.text(alphabet="ABCDEFabcdef0123456789-_=+/", max_size=80)))
def test_conversation_cursor_decode_is_total(text: str) -> None:
    try:
        stamp, conv_id = _decode_cursor(text)
    except ApiError as exc:
        assert (exc.status, exc.code, exc.extra) == (400, "invalid_request", {"field": "cursor"})
        return
    assert stamp.tzinfo is not None and isinstance(conv_id, str)


@given(
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 2), allow_imaginary=False),
    st.text(max_size=40),
)
def test_conversation_cursor_round_trips(stamp: datetime, conv_id: str) -> None:
    cursor = _encode_cursor({"updated_at": stamp, "id": conv_id})
    assert _decode_cursor(cursor) == (stamp, conv_id)


@given(st.text(max_size=300))
def test_user_code_normalize(raw: str) -> None:
    code = normalize(raw)
    if code is not None:
        assert len(code) == USER_CODE_LEN and set(code) <= set(ALPHABET)
        assert normalize(display(code)) == code
        assert normalize(display(code).lower()) == code


FORM = "application/x-www-form-urlencoded"
content_types = st.sampled_from(
    [
        FORM,
        f"{FORM}; charset=utf-8",
        f"{FORM}; charset=latin-1",
        f"{FORM}; charset=no-such-charset",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/json",
        "text/plain",
        "",
    ]
)
form_pairs = st.lists(
    st.tuples(
        st.sampled_from(["grant_type", "device_code", "client_id", "userCode", "user_code", "x"]),
        st.text(max_size=40),
    ),
    max_size=6,
)


def _urlencode(pairs: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    form_pairs.map(_urlencode),
    st.builds(
        lambda pairs: (
            b"--xyz\r\n"
            + b"".join(
                b'Content-Disposition: form-data; name="%s"\r\n\r\n%s\r\n--xyz\r\n'
                % (k.encode(), v.encode())
                for k, v in pairs
            )
            + b"--\r\n"
        ),
        form_pairs,
    ),
)


async def _read(
    body: bytes, content_type: str, model: type[TokenRequest | DecisionRequest]
) -> object:
    """``read_oauth`` on a real aiohttp request whose body stream holds ``body``."""
    protocol = mock.Mock(_reading_paused=False)  # aiohttp's transport side, not our code
    payload = streams.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    headers = {"Content-Length": str(len(body))}
    if content_type:
        headers["Content-Type"] = content_type
    request = make_mocked_request(
        "POST", "/api/auth/device/token", headers=headers, payload=payload
    )
    return await read_oauth(request, model)


@settings(max_examples=400, deadline=None)
@given(bodies, content_types, st.sampled_from([TokenRequest, DecisionRequest]))
def test_device_flow_body_parser_is_total(
    body: bytes, content_type: str, model: type[TokenRequest | DecisionRequest]
) -> None:
    try:
        parsed = asyncio.run(_read(body, content_type, model))
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "invalid_request", (exc.status, exc.code)
        assert exc.message
        return
    assert isinstance(parsed, model)
    for value in parsed.model_dump().values():
        assert value is None or (isinstance(value, str) and value != "")
