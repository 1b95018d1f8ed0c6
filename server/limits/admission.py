"""Admission control: a start waits for capacity; only real overload of *this* process refuses.

A send that would start a generation asks :meth:`Admission.admit` first. The rule, in the
order it is applied:

1. **The floor.** While this process runs fewer than ``CERO_ADMISSION_FLOOR`` generations, a
   start is admitted at once, whatever the machine is doing. A single user is never refused
   because other processes keep the cores busy (issue 20, item 12).
2. **Saturation is this process's own work.** The sampler wakes every ``INTERVAL_S`` and
   notes two things over the last ``WINDOW_S``: the CPU time this process used per second of
   wall time (``time.process_time``, every thread) and the event loop's worst lag. The
   process is *saturated* only when both are past their limits (``CERO_MAX_CPU`` of one core
   and ``CERO_MAX_LOOP_LAG``). Lag alone is not overload: on a machine whose cores other
   processes hold, the loop lags while this process uses little CPU, and refusing then sends
   users away from an idle server. CPU alone is not either: a busy process that still keeps
   time serves its answers within target.
3. **Queue, then refuse.** A start that arrives while the process is saturated (or while
   others already wait) joins a FIFO queue of at most ``CERO_ADMISSION_QUEUE`` waiters. Each
   sampler tick that finds the process not saturated lets ``RELEASE_PER_TICK`` waiters in
   (a burst of 500 starts is spread over a few seconds instead of refused). A waiter that is
   not let in within ``CERO_ADMISSION_WAIT`` seconds, or that finds the queue full, is
   refused with ``503 overloaded`` and ``Retry-After``. Running generations are never
   stopped by any of this.

The figures (running, queued, CPU, lag, refusals) are in ``/metrics`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from server.core.errors import ApiError

#: The process's admission control (started by the chat runtime).
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")

#: How often the sampler wakes.
INTERVAL_S = 0.1
#: How far back CPU use and lag are looked at.
WINDOW_S = 1.0
#: Waiters let in per sampler tick while the process is not saturated (100 starts/s).
RELEASE_PER_TICK = 10


class Overloaded(ApiError):
    """The start waited its time (or found the queue full): the contract's ``503
    overloaded`` with ``Retry-After``."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            503,
            "overloaded",
            "The server is at capacity; retry shortly",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    #: Below this many running generations a start is always admitted.
    floor: int = 16
    #: CPU seconds per second (1.0 = one core) past which the process may be saturated.
    max_cpu: float = 0.9
    #: Worst loop lag (s) past which the process may be saturated; 0 turns admission off.
    max_lag: float = 0.25
    #: How long a start may wait in the queue.
    wait: float = 10.0
    #: How many starts may wait at once.
    queue: int = 1000


class Admission:
    """Decides whether a start runs now, waits, or is refused (see the module docstring)."""

    def __init__(self, limits: AdmissionLimits, running: Callable[[], int]) -> None:
        self.limits = limits
        self._running = running
        self.lag = 0.0  # worst lag in the window
        self.cpu = 0.0  # CPU seconds per wall second in the window
        self.refused = 0
        self.queued_total = 0
        self.starting = 0  # admitted, generation not begun yet
        self._samples: deque[tuple[float, float, float, float]] = deque()  # now, wall, cpu, lag
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._task: asyncio.Task[None] | None = None

    # --- the sampler ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="admission")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(Overloaded(self.retry_after))
        self._waiters.clear()

    async def _run(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        while True:
            await asyncio.sleep(INTERVAL_S)
            now, now_cpu = time.monotonic(), time.process_time()
            self.note(now, now - wall, now_cpu - cpu, now - wall - INTERVAL_S)
            wall, cpu = now, now_cpu
            self.release()

    def note(self, now: float, wall: float, cpu: float, lag: float) -> None:
        """One sample: ``wall`` seconds passed, this process used ``cpu`` of them, and the
        sampler's timer fired ``lag`` seconds late."""
        samples = self._samples
        samples.append((now, max(wall, 1e-9), max(cpu, 0.0), max(lag, 0.0)))
        while samples and samples[0][0] < now - WINDOW_S:
            samples.popleft()
        self.lag = max(sample[3] for sample in samples)
        self.cpu = sum(sample[2] for sample in samples) / sum(sample[1] for sample in samples)

    # --- the rule -------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Generations running here, plus starts admitted that have not begun yet."""
        return self._running() + self.starting

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def saturated(self) -> bool:
        limits = self.limits
        return limits.max_lag > 0 and self.lag > limits.max_lag and self.cpu >= limits.max_cpu

    @property
    def retry_after(self) -> int:
        return max(1, round(self.limits.wait / 4))

    def _below_floor(self) -> bool:
        return self.running < self.limits.floor

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Wait for admission (or raise :class:`Overloaded`); the start counts as running
        until the block ends, by which time its generation has begun (or failed)."""
        await self._admit()
        self.starting += 1
        try:
            yield
        finally:
            self.starting -= 1

    async def _admit(self) -> None:
        if self._below_floor() or (not self._waiters and not self.saturated):
            return
        if len(self._waiters) >= self.limits.queue:
            self.refused += 1
            raise Overloaded(self.retry_after)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.queued_total += 1
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.limits.wait)
        except TimeoutError:
            self.refused += 1
            raise Overloaded(self.retry_after) from None
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Let waiters in: up to the floor's free places, and a few more a tick while the
        process is not saturated."""
        waiters = self._waiters
        budget = 0 if self.saturated else RELEASE_PER_TICK
        budget = max(budget, self.limits.floor - self.running)
        while waiters and budget > 0:
            waiter = waiters.popleft()
            if waiter.done():  # timed out or cancelled meanwhile
                continue
            waiter.set_result(None)
            budget -= 1
