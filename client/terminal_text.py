"""Text from the server made safe for a terminal: no control characters, no escape sequences.

Answers can be steered by web pages (the search and URL tools), and titles, tool payloads and
error texts come from the server: printed raw, an ``ESC ] 52`` would write the clipboard,
``ESC ] 0`` retitle the window, ``ESC [ 2 J`` clear the screen, ``ESC ] 8`` hide a link
behind innocent text. :class:`TerminalFilter` lets through only ``\\n``, ``\\t`` and
printable characters: every other C0 control (``\\r`` and ``ESC`` among them), ``DEL`` and
every C1 control (U+0080–U+009F, e.g. U+009B, the one-character CSI) is dropped.

That alone is the guarantee; the state machine on top is for what the reader sees: an
escape sequence is dropped whole (``ESC [ 2 J``, ``ESC ] 52;c;<base64> BEL``), not just its
``ESC``, even when a stream cuts it across two pieces. A sequence never runs past a newline
here, so an unterminated one hides at most the rest of its line.

Bidi controls (U+202A–U+202E, U+2066–U+2069) are not terminal controls and are legitimate in
right-to-left text; they are left alone.
"""

from __future__ import annotations

from enum import Enum, auto


class _State(Enum):
    TEXT = auto()
    ESC = auto()  # after ESC
    ESC_INTERMEDIATE = auto()  # ESC then 0x20–0x2F, until a final byte (ESC ( B)
    CSI = auto()  # ESC [ or U+009B: parameters, intermediates, one final byte
    STRING = auto()  # OSC, DCS, SOS, PM, APC: until BEL or ST
    STRING_ESC = auto()  # ESC inside a string: ST if a backslash follows


#: ESC followed by these opens a control string (OSC ], DCS P, SOS X, PM ^, APC _).
_STRING_OPENERS = frozenset("]PX^_")
#: Their one-character C1 forms: DCS, SOS, OSC, PM, APC.
_C1_STRING_OPENERS = frozenset("\x90\x98\x9d\x9e\x9f")
_C1_CSI = "\x9b"
_C1_ST = "\x9c"
_KEPT_CONTROLS = frozenset("\n\t")


def is_control(char: str) -> bool:
    """C0 (but ``\\n`` and ``\\t``), DEL or C1: never written to a terminal unasked."""
    code = ord(char)
    return (code < 0x20 and char not in _KEPT_CONTROLS) or 0x7F <= code <= 0x9F


class TerminalFilter:
    """Feed it text piece by piece (tokens as they stream); it returns what may be shown.

    Nothing is held back: a character is either printed at once or dropped, so the output
    is the same however the input is cut into pieces."""

    def __init__(self) -> None:
        self._state = _State.TEXT

    def reset(self) -> None:
        """Forget a sequence left open (at the end of an answer)."""
        self._state = _State.TEXT

    def feed(self, text: str) -> str:
        if self._state is _State.TEXT and not any(map(is_control, text)):
            return text  # the common case: nothing to do
        kept: list[str] = []
        for char in text:
            if self._step(char):
                kept.append(char)
        return "".join(kept)

    def _step(self, char: str) -> bool:
        """Advance by one character; whether it is shown."""
        state = self._state
        if char == "\n" and state is not _State.TEXT:
            self._state = _State.TEXT  # a sequence never runs past a newline here
            return True
        if state is _State.TEXT:
            return self._text(char)
        code = ord(char)
        if state is _State.STRING:
            if char in ("\x07", _C1_ST):
                self._state = _State.TEXT
            elif char == "\x1b":
                self._state = _State.STRING_ESC
            return False
        if state is _State.STRING_ESC:
            if char == "\\":
                self._state = _State.TEXT
                return False
            state = self._state = _State.ESC  # ESC then something else: a new escape
        if state is _State.ESC:
            if char == "[":
                self._state = _State.CSI
            elif char in _STRING_OPENERS:
                self._state = _State.STRING
            elif 0x20 <= code <= 0x2F:
                self._state = _State.ESC_INTERMEDIATE
            elif 0x30 <= code <= 0x7E:
                self._state = _State.TEXT  # a two-character escape (ESC 7, ESC c, …)
            elif char == "\x1b" or is_control(char):
                pass  # ignored inside the escape, as a terminal would
            else:  # not an escape after all: back to text with this character
                return self._text(char)
            return False
        if state is _State.ESC_INTERMEDIATE:
            if 0x30 <= code <= 0x7E:
                self._state = _State.TEXT
            elif not (0x20 <= code <= 0x2F or is_control(char)):
                return self._text(char)
            return False
        # CSI: parameter bytes 0x30–0x3F, intermediates 0x20–0x2F, then a final 0x40–0x7E
        if 0x40 <= code <= 0x7E:
            self._state = _State.TEXT
        elif 0x20 <= code <= 0x3F:
            pass
        elif char == "\x1b":
            self._state = _State.ESC
        elif not is_control(char):
            return self._text(char)  # a malformed sequence ends; the character is text
        return False

    def _text(self, char: str) -> bool:
        self._state = _State.TEXT
        if not is_control(char):
            return True
        if char == "\x1b":
            self._state = _State.ESC
        elif char == _C1_CSI:
            self._state = _State.CSI
        elif char in _C1_STRING_OPENERS:
            self._state = _State.STRING
        return False


def clean(text: str) -> str:
    """One whole piece of text (a title, an error line), made safe on its own."""
    return TerminalFilter().feed(text)
