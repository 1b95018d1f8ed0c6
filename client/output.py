"""Where the CLI writes: the answer on stdout as it arrives, everything else on stderr.

stdout gets bytes written and flushed per piece, so a pipe sees each token at once. The
"waiting for the first token" spinner is drawn on stderr, and only when stderr is a TTY.

Everything from the server passes :class:`client.terminal_text.TerminalFilter` first (no
control characters, no escape sequences: an answer steered by a web page must not retitle
the terminal or write its clipboard). Only what was asked for byte-exact bypasses it:
``--json`` lines (:meth:`Output.verbatim`) and the answer text under ``--raw``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import BinaryIO, TextIO

import orjson

from client.terminal_text import TerminalFilter, clean

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Output:
    def __init__(
        self, out: BinaryIO | None = None, err: TextIO | None = None, *, raw: bool = False
    ) -> None:
        self.out = out or sys.stdout.buffer
        self.err = err or sys.stderr
        #: ``--raw``: stdout text as the server sent it (stderr is filtered all the same).
        self.raw = raw
        self._filter = TerminalFilter()  # stdout's, across pieces: a token may cut a sequence
        self.err_tty = self.err.isatty()
        self._last = b"\n"  # the last byte written to stdout
        self._spinner: asyncio.Task[None] | None = None
        self._label = ""

    def text(self, text: str) -> None:
        """A piece of an answer (or any stdout text), filtered, written and flushed now."""
        self.verbatim(text if self.raw else self._filter.feed(text))

    def verbatim(self, text: str) -> None:
        """Stdout text written exactly as given (``--json``, ``--raw``)."""
        if not text:
            return
        self.stop_spinner()
        data = text.encode("utf-8", "surrogateescape")
        self.out.write(data)
        self.out.flush()
        self._last = data[-1:]

    def json(self, value: object) -> None:
        """One NDJSON line on stdout."""
        self.verbatim(orjson.dumps(value).decode() + "\n")

    def end_line(self) -> None:
        """Make stdout end with a newline (after an answer); a sequence the answer left
        open ends with it."""
        self._filter.reset()
        if self._last != b"\n":
            self.verbatim("\n")

    @property
    def at_line_start(self) -> bool:
        return self._last == b"\n"

    def note(self, line: str) -> None:
        """One line on stderr (tool steps, sources, progress, warnings), filtered; a
        spinner goes on below it."""
        if self._spinner is not None:
            self.err.write("\r\x1b[K")
        self.err.write(clean(line) + "\n")
        self.err.flush()

    def error(self, message: str) -> None:
        """The ``cero: error: …`` line (its text is often the server's)."""
        self.err.write(f"cero: error: {clean(message)}\n")
        self.err.flush()

    def tty_note(self, line: str) -> None:
        """A line only a person at a terminal wants (presence, conversation id)."""
        if self.err_tty:
            self.note(line)

    # -- progress while waiting for the first token ---------------------------------------

    def start_spinner(self, label: str) -> None:
        """Show ``label`` and the time waited, until the first stdout text (TTY only)."""
        self._label = label
        if self.err_tty and self._spinner is None:
            self._spinner = asyncio.get_running_loop().create_task(self._spin())

    def stop_spinner(self) -> None:
        task, self._spinner = self._spinner, None
        if task is not None:
            task.cancel()
            self.err.write("\r\x1b[K")
            self.err.flush()

    async def _spin(self) -> None:
        started = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            for i in range(1 << 30):
                elapsed = time.monotonic() - started
                self.err.write(f"\r{SPINNER[i % len(SPINNER)]} {self._label} {elapsed:.1f}s")
                self.err.flush()
                await asyncio.sleep(0.1)
