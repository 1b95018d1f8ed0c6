"""``IdleDeadline``: one timer per stream, and the same expiry rules as ``asyncio.timeout``."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.models.idle_deadline import IdleDeadline

pytestmark = pytest.mark.asyncio


async def _read(deadline: IdleDeadline, seconds: float, wait: float) -> str:
    deadline.arm(seconds)
    try:
        await asyncio.sleep(wait)
    except asyncio.CancelledError:
        if deadline.expired():
            return "expired"
        raise
    deadline.disarm()
    return "read"


async def test_a_read_past_its_deadline_expires() -> None:
    deadline = IdleDeadline()
    started = time.monotonic()
    assert await _read(deadline, 0.05, 5) == "expired"
    assert time.monotonic() - started < 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back
    deadline.close()


async def test_steady_reads_outlive_the_deadline_and_keep_one_timer() -> None:
    """Twenty reads of 20 ms each under a 150 ms deadline: 400 ms in all, never expired;
    the deadline moved forward on every read without a new timer per read."""
    loop = asyncio.get_running_loop()
    made: list[float] = []
    call_at = loop.call_at

    def counting(when, callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        if getattr(callback, "__self__", None) is deadline:
            made.append(when)
        return call_at(when, callback, *args, **kwargs)

    deadline = IdleDeadline()
    loop.call_at = counting  # type: ignore[method-assign,assignment]
    try:
        for _ in range(20):
            assert await _read(deadline, 0.15, 0.02) == "read"
        deadline.close()
    finally:
        del loop.call_at
    # One timer to start, and one more each time it fired early (every ~150 ms): far
    # fewer than one per read.
    assert 1 <= len(made) <= 6, made


async def test_a_timer_that_fires_between_reads_does_nothing() -> None:
    deadline = IdleDeadline()
    assert await _read(deadline, 0.02, 0) == "read"
    await asyncio.sleep(0.06)  # the timer fires with no read in progress
    assert await _read(deadline, 0.05, 0.01) == "read"
    deadline.close()


async def test_an_outside_cancel_is_not_an_expiry() -> None:
    deadline = IdleDeadline()
    task = asyncio.create_task(_read(deadline, 5, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()


async def test_an_outside_cancel_at_expiry_still_cancels() -> None:
    """Expiry and an outside cancel together: the outside one wins (as with
    ``asyncio.timeout``), so a cancelled generation is not reported as a timeout."""
    deadline = IdleDeadline()
    task = asyncio.create_task(_read(deadline, 0.02, 5))
    await asyncio.sleep(0)  # the read is armed and waiting
    time.sleep(0.05)  # past due: the timer and this cancel run before the task does
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()


async def test_the_deadline_follows_the_task_that_reads() -> None:
    """The first read in one task, the next in another (as a generation's opening task
    and its consuming task read one stream)."""
    deadline = IdleDeadline()
    assert await asyncio.create_task(_read(deadline, 0.05, 0)) == "read"
    assert await asyncio.create_task(_read(deadline, 0.03, 5)) == "expired"
    deadline.close()
