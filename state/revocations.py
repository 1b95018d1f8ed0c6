"""Revoked sessions, seen by every process: a signed-out or revoked session must not live on
in another process's cookie cache (valid :data:`CACHE_TTL_S`), nor keep its sockets there.

One process needs none of this (its session store remembers what it revoked), so the
server installs a :class:`Revocations` only in cluster mode:
:class:`cluster.state.revocations.RedisRevocations`. :class:`MemoryRevocations` is the same
contract inside one process (the conformance suite's reference, and a stand-in where a
store is wanted without Redis).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

#: How long a cookie cache entry is believed: a revocation is remembered that long.
CACHE_TTL_S = 300
_MAX_REMEMBERED = 100_000


class Revocations(Protocol):
    async def publish(self, session_id: str) -> None:
        """Mark ``session_id`` revoked and tell every listener; never raises (a failure is
        logged and retried)."""
        ...

    async def revoked(self, session_id: str) -> bool:
        """Revoked lately, by any process (``True`` when that cannot be known)."""
        ...

    async def listen(self, on_revoked: Callable[[str], None]) -> None:
        """Call ``on_revoked(session_id)`` for every revocation published from now on (this
        process's included), until cancelled."""
        ...


class MemoryRevocations:
    """:class:`Revocations` within one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._revoked: dict[str, float] = {}
        self._listeners: list[Callable[[str], None]] = []

    async def publish(self, session_id: str) -> None:
        now = self._clock()
        if len(self._revoked) >= _MAX_REMEMBERED:
            self._revoked = {k: t for k, t in self._revoked.items() if now - t < CACHE_TTL_S}
        self._revoked[session_id] = now
        for listener in list(self._listeners):
            listener(session_id)

    async def revoked(self, session_id: str) -> bool:
        at = self._revoked.get(session_id)
        return at is not None and self._clock() - at < CACHE_TTL_S

    async def listen(self, on_revoked: Callable[[str], None]) -> None:
        self._listeners.append(on_revoked)
        try:
            await asyncio.Event().wait()
        finally:
            self._listeners.remove(on_revoked)
