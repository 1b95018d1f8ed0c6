"""Ctrl-C as an event inside the event loop, so a command can react to it.

``cero chat`` turns the first Ctrl-C into a cancel of the answer it streams (the partial
answer is kept) and the second into "quit now" — or, with ``--detach-on-interrupt``, the
first into leaving the answer running on the server (:func:`detached`); the interactive
mode turns one at the prompt into a hint. Handlers nest: :meth:`CtrlC.handling` pushes
one for the duration of a ``with`` block, and a press calls the innermost. With no handler
pushed (or off the main thread, where signals cannot be caught) Ctrl-C is Python's
``KeyboardInterrupt``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from client.errors import CliError, Exit

Handler = Callable[[], None]


class Interrupted(CliError):
    """Quit at once after Ctrl-C (the second one); exit code 130."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Exit.INTERRUPTED)


class CtrlC:
    """SIGINT dispatched to the innermost handler pushed by :meth:`handling`."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    @contextmanager
    def handling(self, handler: Handler) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = False
        if not self._handlers:
            try:
                loop.add_signal_handler(signal.SIGINT, self._dispatch)
                installed = True
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signals here: KeyboardInterrupt as usual
        self._handlers.append(handler)
        try:
            yield
        finally:
            self._handlers.pop()
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    def _dispatch(self) -> None:
        if self._handlers:
            self._handlers[-1]()


class Presses:
    """Counts Ctrl-C presses for one answer: the first asks to stop it, the next quits."""

    def __init__(self, first: Handler) -> None:
        self._first = first
        self.count = 0
        self.task = asyncio.current_task()

    def __call__(self) -> None:
        self.count += 1
        if self.count == 1:
            self._first()
        elif self.task is not None:
            self.task.cancel()  # the command turns this cancellation into Interrupted


def detached(conversation: str) -> Interrupted:
    """Ctrl-C with ``--detach-on-interrupt``: the answer goes on on the server; how to
    follow it and how to stop it (exit 130)."""
    return Interrupted(
        f"detached; the answer goes on on the server (follow it: cero watch {conversation}; "
        f"stop it: cero cancel {conversation})"
    )
