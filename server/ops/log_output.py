"""Where log lines go: stderr, written by a thread of its own so that logging can never
block or break the server.

A server's stderr is often a pipe (``scripts/cluster.sh`` prefixes each line; a process
supervisor collects them). If the reader is gone, every write fails with ``EPIPE``
(``BrokenPipeError``); if the reader is alive but stopped, the pipe fills and every write
blocks. Either used to reach the code that logged: a ``log.info("draining")`` raising out
of the shutdown path, or the event loop stuck in ``write()``, left a process running long
after SIGTERM. Here a write only queues the line (bounded: past
:data:`MAX_PENDING_BYTES` lines are dropped and counted), one daemon thread writes the
queue to the file descriptor, and an output that failed once is given up for good.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections import deque
from typing import IO

#: Bytes waiting for the writer thread before new lines are dropped.
MAX_PENDING_BYTES = 1 << 20
#: How long the process waits at exit for queued lines to be written.
EXIT_FLUSH_S = 1.0


class LogOutput:
    """A file-like sink (``write``/``flush``) for structlog and the ``logging`` module that
    never blocks and never raises."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._writing = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="log-output", daemon=True)
        self._thread.start()

    def write(self, data: str | bytes) -> int:
        raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
        with self._cond:
            if self.broken:
                return len(data)
            if self._pending_bytes + len(raw) > MAX_PENDING_BYTES:
                self.dropped += 1
                return len(data)
            self._pending.append(raw)
            self._pending_bytes += len(raw)
            self._cond.notify()
        return len(data)

    def flush(self) -> None:
        """A no-op: lines are written as soon as the thread can; see :meth:`drain`."""

    def isatty(self) -> bool:
        with contextlib.suppress(OSError):
            return os.isatty(self._fd)
        return False

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued lines to be written; whether they
        were (``True`` also when the output is broken: there is nothing left to wait for)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._pending or self._writing) and not self.broken:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                chunk = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._writing = True
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                with self._cond:
                    self.broken = True  # EPIPE, EBADF...: nobody reads any more
                    self._pending.clear()
                    self._pending_bytes = 0
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
            if self.broken:
                return


_outputs: dict[int, LogOutput] = {}


def log_output(stream: IO[str]) -> LogOutput | None:
    """The non-blocking sink for ``stream``'s file descriptor (one per descriptor);
    ``None`` for a stream without one (a test's in-memory buffer)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    output = _outputs.get(fd)
    if output is None:
        output = _outputs[fd] = LogOutput(fd)
        atexit.register(output.drain, EXIT_FLUSH_S)
    return output


def drain_all(timeout: float) -> None:
    """Give every sink up to ``timeout`` seconds to write what it holds."""
    deadline = time.monotonic() + timeout
    for output in list(_outputs.values()):
        output.drain(max(0.0, deadline - time.monotonic()))
