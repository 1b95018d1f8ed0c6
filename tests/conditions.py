"""Waiting in tests for a condition, never for a fixed time.

Where the thing awaited has no event of its own (a counter in the server, a row in the
database, a process's memory), :func:`until` checks it every ``every`` seconds and returns
as soon as it holds; past ``within`` it fails naming what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def until(
    condition: Condition, within: float = 10.0, *, every: float = 0.02, what: str = ""
) -> None:
    """Return once ``condition()`` (a function or a coroutine function) is true."""
    deadline = time.monotonic() + within
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            name = what or getattr(condition, "__name__", repr(condition))
            raise AssertionError(f"still not true after {within} s: {name}")
        await asyncio.sleep(every)  # the polling interval, not a guess at a duration
