"""aiohttp's ``WebSocketResponse`` with the two guarantees RFC 6455 asks of a server that
aiohttp leaves out.

- §5.1: a client frame without a mask closes the connection with 1002. aiohttp's reader
  accepts both; :class:`MaskCheck` follows the client's frame boundaries (headers only:
  payload bytes are skipped by count, never copied) in front of aiohttp's reader.
- §5.5.1: after a Close frame no data frame. Events reach a socket by raw writes that
  bypass aiohttp (:mod:`server.transports.wire`); :meth:`CeroWebSocket.close` runs a hook
  *before* aiohttp queues its Close frame, whichever path closes (a bad frame, an
  oversized one, the peer's Close, shutdown, our own close), and the hook shuts the raw
  writer.

The aiohttp internals this needs (``_post_start``, the handler's ``_payload_parser`` and
``_message_tail``, the response's ``_reader`` queue) are used here only, and
``tests/server/transports/test_ws_hardening.py`` fails loudly if an upgrade removes one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.http import WebSocketError, WebSocketWriter
from aiohttp.web_request import BaseRequest

_FAILED = (True, b"")


class MaskCheck:
    """Sans-I/O: where the first unmasked client frame starts in a byte stream."""

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = bytearray()  # the header read so far (at most 10 bytes)
        self._skip = 0  # masking key and payload bytes still to pass

    def scan(self, data: bytes) -> int:
        """The offset in ``data`` of the header of the first unmasked frame (0 when it
        began in an earlier chunk), or ``-1`` when every frame so far is masked."""
        pos, size = 0, len(data)
        head = self._head
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                continue
            begun = pos - len(head)
            if len(head) < 2:
                take = min(2 - len(head), size - pos)
                head += data[pos : pos + take]
                pos += take
                if len(head) < 2:
                    break
            if not head[1] & 0x80:
                return max(begun, 0)
            flag = head[1] & 0x7F
            full = 2 + (2 if flag == 126 else 8 if flag == 127 else 0)
            if len(head) < full:
                take = min(full - len(head), size - pos)
                head += data[pos : pos + take]
                pos += take
                if len(head) < full:
                    break
            length = flag if flag < 126 else int.from_bytes(head[2:full], "big")
            self._skip = 4 + length  # the masking key, then the payload
            head.clear()
        return -1


class _MaskCheckingParser:
    """Stands in front of aiohttp's frame reader on the request's protocol."""

    __slots__ = ("_check", "_failed", "_parser", "_queue")

    def __init__(self, parser: Any, queue: Any) -> None:
        self._parser = parser
        self._queue = queue
        self._check = MaskCheck()
        self._failed = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return _FAILED
        bad = self._check.scan(data)
        if bad < 0:
            result: tuple[bool, bytes] = self._parser.feed_data(data)
            return result
        if bad:
            eof, tail = self._parser.feed_data(data[:bad])  # the frames before it are fine
            if eof:
                return eof, tail
        self._failed = True
        # What aiohttp's reader does with a protocol error: the handler's receive() gets
        # it after the frames already queued, and closes with its code.
        self._queue.set_exception(
            WebSocketError(WSCloseCode.PROTOCOL_ERROR, "Received an unmasked client frame")
        )
        return _FAILED

    def feed_eof(self) -> None:
        self._parser.feed_eof()


class CeroWebSocket(web.WebSocketResponse):
    """A server WebSocket that refuses unmasked frames and tells ``before_close`` when a
    Close frame is about to be queued."""

    # A slot, not an instance attribute: an open aiohttp WebSocketResponse holds 29
    # attributes in its dict, CPython 3.11 shares one dict layout among a class's instances
    # up to 30 keys, and past it every socket pays a full dict of its own (~1.3 KB more per
    # idle socket, bench scenario 3).
    __slots__ = ("before_close",)

    def __init__(
        self,
        *,
        before_close: Callable[[], None] | None = None,
        pong_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.before_close = before_close
        if pong_timeout is not None:
            # aiohttp waits heartbeat/2 for the pong and has no public knob for it; the
            # contract gives the peer a full heartbeat more
            # (tests/server/http/test_aiohttp_hooks.py).
            self._pong_heartbeat = pong_timeout

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        hook = self.before_close
        if hook is not None:
            self.before_close = None
            hook()
        return await super().close(code=code, message=message, drain=drain)

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        handler: Any = request.protocol
        # Bytes that came with the upgrade request would be fed to aiohttp's reader inside
        # super()._post_start, before the check is in place: hold them back, then feed them
        # through the check like any later bytes.
        early: bytes = handler._message_tail
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        handler._payload_parser = _MaskCheckingParser(handler._payload_parser, self._reader)
        if early:
            handler.data_received(early)
