"""A Server-Sent Events parser that follows the WHATWG HTML spec's "event stream
interpretation", sans I/O: feed it bytes as they arrive, get the dispatched events back.

Kept apart from the network code so that the fiddly parts (lines ending in CR, LF or CRLF,
a CR at the end of one chunk and its LF in the next, UTF-8 split across chunks, a leading
BOM, multi-line ``data``, comments, ``id`` with NUL, ``retry`` that is not a number) are
tested exhaustively by a property test without sockets (tests/client/test_cli_sse.py).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: ``event`` defaults to ``message``; ``last_event_id`` is the
    stream's last event ID at dispatch (what a reconnect sends as ``Last-Event-ID``)."""

    event: str
    data: str
    last_event_id: str


class SSEParser:
    """Incremental event-stream parser (https://html.spec.whatwg.org/#event-stream-interpretation)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # the BOM is stripped once, at the very start
        self._pending = ""  # an incomplete line
        self._after_cr = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer = ""
        #: The last event ID string: survives events, sent back on reconnect.
        self.last_event_id = ""
        #: The reconnection time in milliseconds, once the stream has set one.
        self.retry: int | None = None
        #: Comment lines seen (``: ping`` heartbeats among them).
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse ``chunk``; return the events it completed, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            self._after_cr = False
            if text.startswith("\n"):
                text = text[1:]
        events: list[ServerSentEvent] = []
        buffer = self._pending + text
        start = 0
        length = len(buffer)
        while True:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 < length:
                end, nxt = cr, cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            else:  # CR last in the buffer: the line ends here; an LF may follow next chunk
                end, nxt = cr, cr + 1
                self._after_cr = True
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = nxt
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value and value.isascii() and value.isdigit():
            self.retry = int(value)
        # any other field is ignored
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        if not data:
            return None
        return ServerSentEvent(
            event=event_type or "message", data="\n".join(data), last_event_id=self.last_event_id
        )
