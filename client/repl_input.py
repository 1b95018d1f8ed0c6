"""Where the interactive mode's lines come from (:mod:`client.repl`).

On a terminal (stdin, stdout and stderr all TTYs) a line is typed at prompt_toolkit's
prompt (:class:`PromptLines`): editing keys, Up/Down through the history of earlier
lines (:mod:`client.history`, kept across sessions unless turned off), Ctrl-R to search
it, Tab to complete a ``/command``. The prompt is drawn on stderr, so stdout holds only
the answers. Ctrl-C there is a key, not a signal: the line typed so far is dropped and the
session says how to leave; Ctrl-D on an empty line leaves. Live events that arrive while
the prompt shows (another device's turn, presence, a rename) go through
:meth:`PromptLines.above`: the prompt is taken down first (what was typed kept), the event
printed, and the prompt drawn again with the typed line once stdout is at the start of a
line, so neither garbles the other. While another device's answer streams the prompt
stays down; keys typed meanwhile are not echoed into the answer (the terminal holds them)
and land in the line when the prompt is back.

Anywhere else (a pipe, a file, or output redirected) lines come from a daemon thread
reading stdin (:class:`StdinLines`): it works for a terminal, a pipe and a file alike, and
a blocked read never holds up the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.history import History
from prompt_toolkit.output import create_output
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.utils import is_dumb_terminal

from client.output import Output

try:
    import termios
except ImportError:  # not a POSIX terminal
    termios = None  # type: ignore[assignment]

PROMPT = "› "
COMMANDS = ("/new", "/model", "/help", "/exit")


class Lines(Protocol):
    """A source of typed lines."""

    #: Whether it draws its own prompt (else :class:`client.repl.Session` writes one).
    draws_prompt: bool

    async def next(self) -> str | None:
        """The next line (with or without its ``\\n``); ``None`` at the end of input."""

    def above(self) -> AbstractAsyncContextManager[None]:
        """Around output printed while a line may be being typed."""

    def interrupt(self) -> bool:
        """Ctrl-C came as a signal while waiting for a line: whether the source took it
        (then it reacts as to the key)."""


def on_a_terminal() -> bool:
    """Whether the prompt with line editing is used: stdin, stdout and stderr TTYs (and
    a terminal that is not ``TERM=dumb``)."""
    ttys = all(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr))
    return ttys and not is_dumb_terminal()


class StdinLines:
    """Lines of ``stream`` as an asyncio queue, read by a daemon thread; ``None`` at EOF."""

    draws_prompt = False

    def __init__(self, stream: TextIO) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._stream = stream
        threading.Thread(target=self._read, name="cero-stdin", daemon=True).start()

    def _read(self) -> None:
        # RuntimeError: the loop is closed (the command is over; this thread just ends).
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            while line := self._stream.readline():
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def next(self) -> str | None:
        return await self._queue.get()

    def above(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def interrupt(self) -> bool:
        return False


class PromptLines:
    """Lines typed at prompt_toolkit's prompt on the terminal, with ``history``.

    ``ctrl_c`` is called when Ctrl-C is pressed at the prompt (the prompt is then asked
    again, empty); Ctrl-D on an empty line is the end of input.

    Output printed while the prompt shows goes through :meth:`above`: the prompt is taken
    down first (the line typed so far kept as a draft), and comes back with the draft once
    stdout is at the start of a line again. While another device's answer streams, the
    prompt stays down (keys typed meanwhile are not echoed into the answer: they wait in
    the terminal and land in the line when the prompt is back).
    """

    draws_prompt = True
    #: How long stdout may stay in the middle of a line with nothing printed before the
    #: prompt comes back anyway (on a line of its own): an answer that stopped streaming.
    STALL = 5.0

    def __init__(self, history: History, out: Output, ctrl_c: Callable[[], None]) -> None:
        self._out = out
        self._ctrl_c = ctrl_c
        output = create_output(stdout=out.err)
        if isinstance(output, Vt100_Output):
            # No cursor position requests: the reply makes prompt_toolkit claim the rows
            # below the prompt, which it needs not (and a reply arriving while the prompt
            # is down would be echoed).
            output.enable_cpr = False
        self._session: PromptSession[str] = PromptSession(
            history=history,
            output=output,
            completer=WordCompleter(list(COMMANDS), sentence=True),
            complete_while_typing=False,
            reserve_space_for_menu=0,
        )
        self._terminal = Terminal(sys.stdin)
        self._draft = ""  # the line typed so far, while the prompt is down
        self._hiding = False  # the prompt is being taken down by `above`
        self._hint = False  # Ctrl-C came while it was down: say it when it is back
        self._waiting = False  # the prompt is down, waiting for the end of a line
        self._up = False  # prompt_async is running
        self._down = asyncio.Event()  # set while prompt_async is not running
        self._down.set()
        self._printing = 0  # `above` blocks running
        self._printed = asyncio.Event()  # set when the last `above` block running ends

    async def next(self) -> str | None:
        try:
            while True:
                await self._until_line_start()
                if self._hint:
                    self._hint = False
                    self._ctrl_c()
                    continue
                try:
                    line = await self._prompt()
                except KeyboardInterrupt:
                    self._ctrl_c()
                    continue
                except EOFError:
                    return None
                if self._hiding:  # taken down by `above`, the line kept as the draft
                    self._hiding = False
                    continue
                return line
        finally:
            self._terminal.restore()

    async def _until_line_start(self) -> None:
        """Until no output is being printed and stdout is at the start of a line."""
        while self._printing or not self._out.at_line_start:
            self._terminal.quiet()  # keys typed meanwhile wait, unechoed
            self._waiting = True
            self._printed.clear()
            try:
                await asyncio.wait_for(self._printed.wait(), self.STALL)
            except TimeoutError:
                if self._printing == 0:
                    self._out.end_line()  # the answer stalled: the prompt on its own line
            finally:
                self._waiting = False

    async def _prompt(self) -> str:
        """One prompt, the draft in it."""
        draft, self._draft = self._draft, ""
        self._up = True
        self._down.clear()
        try:
            # SIGINT stays with the session's own handler (client.interrupt): while the
            # prompt shows the terminal is raw, and Ctrl-C is a key.
            # The loop's exception handler stays too (prompt_toolkit's would stop at "Press
            # ENTER to continue" for any task's unretrieved exception).
            return await self._session.prompt_async(
                PROMPT, default=draft, handle_sigint=False, set_exception_handler=False
            )
        finally:
            self._up = False
            self._session.app.erase_when_done = False
            self._down.set()

    def _running(self) -> bool:
        app = self._session.app
        return self._up and app.is_running and app.future is not None and not app.future.done()

    @contextlib.asynccontextmanager
    async def above(self) -> AsyncIterator[None]:
        self._printing += 1
        try:
            if self._running():
                app = self._session.app
                self._draft = self._session.default_buffer.text
                self._hiding = True
                app.erase_when_done = True
                app.exit(result="")
            await self._down.wait()
            yield
        finally:
            self._printing -= 1
            if self._printing == 0:
                self._printed.set()

    def interrupt(self) -> bool:
        if self._running():
            self._session.app.exit(exception=KeyboardInterrupt, style="class:aborting")
            return True
        if self._waiting:  # down while an answer prints: said when the prompt is back
            self._draft, self._hint = "", True
            return True
        return False


class Terminal:
    """The terminal's modes around the prompt: while the prompt is down for output, keys
    are neither echoed nor held for a whole line (they wait for the prompt to come back);
    the modes found first are restored when a line is read and at the end."""

    def __init__(self, stream: TextIO) -> None:
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        self._quiet = False
        if termios is None:
            return
        with contextlib.suppress(OSError, ValueError, termios.error):
            fd = stream.fileno()
            self._saved = termios.tcgetattr(fd)
            self._fd = fd

    def quiet(self) -> None:
        if termios is None or self._fd is None or self._saved is None:
            return
        attrs = list(self._saved)
        attrs[3] = attrs[3] & ~(termios.ECHO | termios.ICANON)
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
            self._quiet = True

    def restore(self) -> None:
        if termios is None or self._fd is None or self._saved is None or not self._quiet:
            return
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
            self._quiet = False
