"""Single-use GitHub sign-in states. The state travels in GitHub's redirect and in a signed
cookie valid :data:`STATE_TTL_S`; spending it here makes each one good for one callback.

:class:`MemoryOAuthStates` remembers the states spent in this process;
:class:`cluster.state.oauth_states.RedisOAuthStates` those spent on any process.
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

#: A sign-in state's lifetime (its signed cookie's too).
STATE_TTL_S = 600
_PRUNE_ABOVE = 1000


def state_digest(state: str) -> str:
    """What is kept of a state: its SHA-256 (hex), never the state itself."""
    return hashlib.sha256(state.encode("utf-8", "surrogatepass")).hexdigest()


class OAuthStates(Protocol):
    async def spend(self, state: str) -> bool:
        """True the first time ``state`` is spent, False on any reuse. Raises
        :class:`state.errors.Unavailable` when the store does not answer."""
        ...


class MemoryOAuthStates:
    """States already spent in this process (kept for their lifetime)."""

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    async def spend(self, state: str) -> bool:
        now = time.monotonic()
        if len(self._spent) > _PRUNE_ABOVE:
            self._spent = {k: v for k, v in self._spent.items() if v > now}
        key = state_digest(state)
        expiry = self._spent.get(key)
        if expiry is not None and expiry > now:
            return False
        self._spent[key] = now + STATE_TTL_S
        return True
