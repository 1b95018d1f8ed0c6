"""A read deadline for model streams that costs a clock read per chunk, not a timer.

``asyncio.timeout`` around every chunk read made and cancelled one timer per chunk: 11 %
of the server's CPU per streamed token in scenario 2 (py-spy, 200 streams, 2026-12-07:
``Timeout.reschedule``, ``__aexit__`` and ``timeout`` together). A stream's deadline only
ever moves forward, so one timer per stream suffices: :meth:`IdleDeadline.arm` records
the new due time, and the timer, when it fires early, sets itself again for the due time
it finds. What happens at expiry is what ``asyncio.timeout`` does: the waiting task is
cancelled, and :meth:`IdleDeadline.expired` tells that cancellation from any other (the
same ``uncancel`` count rule), so the caller raises its own timeout error.
"""

from __future__ import annotations

import asyncio

#: A timer that fires this close to its due time counts as due (the loop's own slack).
_SLACK = 0.001


class IdleDeadline:
    """The deadline of the one read in progress: ``arm`` before it, ``disarm`` after."""

    __slots__ = ("_cancelling", "_due", "_fired", "_handle", "_loop", "_task", "_waiting")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._waiting = False
        self._fired = False

    def arm(self, seconds: float) -> None:
        """The read the current task is about to wait for must end within ``seconds``."""
        task = asyncio.current_task()
        if task is not self._task:
            # A stream may be read from more than one task (its first event is awaited by
            # the task that opens it, the rest by the one that consumes it).
            assert task is not None
            self._task = task
            self._cancelling = task.cancelling()
        due = self._loop.time() + seconds
        self._due = due
        self._waiting = True
        handle = self._handle
        if handle is None or handle.when() > due:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(due, self._check)

    def disarm(self) -> None:
        """The read ended in time."""
        self._waiting = False

    def close(self) -> None:
        """No more reads: drop the timer."""
        self._waiting = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expired(self) -> bool:
        """After a ``CancelledError`` from the read: ``True`` when this deadline caused
        it and nothing else asked for a cancellation (then it is taken back)."""
        if not self._fired:
            return False
        self._fired = False
        self._waiting = False
        assert self._task is not None
        return self._task.uncancel() <= self._cancelling

    def _check(self) -> None:
        self._handle = None
        if not self._waiting or self._task is None:
            return  # no read in progress: the next `arm` sets a timer again
        if self._loop.time() + _SLACK < self._due:
            self._handle = self._loop.call_at(self._due, self._check)
            return
        self._fired = True
        self._task.cancel()
