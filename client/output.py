"""Where the CLI writes: the answer on stdout as it arrives, everything else on stderr.

stdout gets bytes written and flushed per piece, so a pipe sees each token at once. The
"waiting for the first token" spinner is drawn on stderr, and only when stderr is a TTY.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import BinaryIO, TextIO

import orjson

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Output:
    def __init__(self, out: BinaryIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout.buffer
        self.err = err or sys.stderr
        self.err_tty = self.err.isatty()
        self._last = b"\n"  # the last byte written to stdout
        self._spinner: asyncio.Task[None] | None = None
        self._label = ""

    def text(self, text: str) -> None:
        """A piece of an answer (or any stdout text), written and flushed now."""
        if not text:
            return
        self.stop_spinner()
        data = text.encode("utf-8", "surrogateescape")
        self.out.write(data)
        self.out.flush()
        self._last = data[-1:]

    def json(self, value: object) -> None:
        """One NDJSON line on stdout."""
        self.text(orjson.dumps(value).decode() + "\n")

    def end_line(self) -> None:
        """Make stdout end with a newline (after an answer)."""
        if self._last != b"\n":
            self.text("\n")

    @property
    def at_line_start(self) -> bool:
        return self._last == b"\n"

    def note(self, line: str) -> None:
        """One line on stderr (tool steps, sources, progress, warnings); a spinner goes on
        below it."""
        if self._spinner is not None:
            self.err.write("\r\x1b[K")
        self.err.write(line + "\n")
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
