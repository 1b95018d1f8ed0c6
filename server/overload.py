"""Admission control: past saturation, new answers are refused and started ones go on.

One process can only stream so many answers at once (at 20 tokens/s each, the SDK alone
parses ~156 µs of CPU per chunk: ~300 answers fill a core). Past that, every answer slows
down together and, with enough of them, timeouts everywhere turn a slowdown into failures
(issue 14: PostgreSQL at 500 conversations). The sign that the process is past its
capacity is the event loop's lag: a timer that should fire every ``interval`` fires late.
While the recent lag exceeds ``CERO_MAX_LOOP_LAG``, a send that would start a generation
gets ``503 overloaded`` with ``Retry-After`` (a load balancer or the client tries again
later, or elsewhere); generations already running are never stopped by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

INTERVAL_S = 0.1
#: How long a lag spike keeps counting (one slow iteration is not overload).
WINDOW_S = 2.0


class LagMonitor:
    def __init__(self, max_lag: float) -> None:
        self.max_lag = max_lag
        self.lag = 0.0  # the worst lag in the last WINDOW_S seconds
        self.refused = 0
        self._samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def overloaded(self) -> bool:
        return self.max_lag > 0 and self.lag > self.max_lag

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(INTERVAL_S)
            now = time.monotonic()
            self.note(now, now - before - INTERVAL_S)

    def note(self, now: float, lag: float) -> None:
        samples = self._samples
        samples.append((now, max(0.0, lag)))
        while samples and samples[0][0] < now - WINDOW_S:
            samples.pop(0)
        self.lag = max(value for _, value in samples)
