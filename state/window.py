"""Events per key in a moving window: device codes issued and sign-in requests per address
(and, inside :mod:`state.user_limits`, sends and new conversations per user).

:class:`MemoryWindow` counts in this process; :class:`cluster.state.window.RedisWindow`
counts for every process of a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from state.counting import SlidingWindow


class Window(Protocol):
    """At most :attr:`limit` events per key in any window."""

    @property
    def limit(self) -> int: ...

    async def hit(self, key: str) -> int | None:
        """Count one event: ``None`` when allowed, else the seconds to wait (a refused
        event is not counted). Raises :class:`state.errors.Unavailable` when the store
        does not answer."""
        ...


class MemoryWindow:
    """A :class:`SlidingWindow` behind the :class:`Window` interface (one process)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = SlidingWindow(limit, window, clock)

    @property
    def limit(self) -> int:
        return self.window.limit

    async def hit(self, key: str) -> int | None:
        return self.window.hit(key)
