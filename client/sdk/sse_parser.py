"""A Server-Sent Events parser by the WHATWG rules, sans I/O: feed it bytes as they
arrive, get back the events they complete.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation:
UTF-8 (invalid bytes replaced), one leading BOM dropped, lines ending in CR, LF or CRLF (a
CR at the end of one chunk and its LF at the start of the next are one line end),
comments (``:``), ``data`` lines joined with LF, ``event`` naming the type (``message``
when none), ``id`` setting the last event ID unless it holds NUL (it survives events, and
is what a reconnect sends as ``Last-Event-ID``), ``retry`` only when all ASCII digits,
unknown fields ignored, a block without ``data`` not dispatched, and an event that the
stream's end cuts off discarded.

Tested by a property test and against httpx-sse's decoder (tests/client/sdk/test_sse_parser.py).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. ``last_event_id`` is the stream's last event ID at dispatch
    (this event's ``id`` or an earlier one's)."""

    event: str
    data: str
    last_event_id: str


class SSEParser:
    """Incremental event-stream parser."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._first = True  # the BOM check is for the stream's first character only
        self._line = ""  # the line read so far
        self._skip_lf = False  # the last line ended with CR: an LF next is part of it
        self._data: list[str] = []
        self._type = ""
        self._id = ""
        #: The last event ID: sent back as ``Last-Event-ID`` on reconnect.
        self.last_event_id = ""
        #: The reconnection time in milliseconds, once the stream has set one.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; the events it completed, in order."""
        return self._text(self._decoder.decode(chunk))

    def close(self) -> list[SSEEvent]:
        """The stream ended: flush the decoder. An incomplete event is discarded, as the
        spec says; nothing is dispatched past the last blank line."""
        events = self._text(self._decoder.decode(b"", final=True))
        self._line = ""
        self._data, self._type = [], ""
        return events

    def _text(self, text: str) -> list[SSEEvent]:
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        events: list[SSEEvent] = []
        start = 0
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                start = 1
        size = len(text)
        while start < size:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                self._line += text[start:]
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, after = lf, lf + 1
            else:
                end, after = cr, cr + 1
                if after < size:
                    if text[after] == "\n":
                        after += 1
                else:
                    self._skip_lf = True  # the LF of a CRLF may come in the next chunk
            line = self._line + text[start:end]
            self._line = ""
            event = self._process(line)
            if event is not None:
                events.append(event)
            start = after
        return events

    def _process(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._id
        data, event_type = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return SSEEvent(event_type or "message", "\n".join(data), self.last_event_id)
