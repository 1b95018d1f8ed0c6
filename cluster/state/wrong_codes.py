"""Wrong user codes in Redis: two sorted sets per address key (decided wrong codes, and
lookups in progress with an expiry), checked and reserved by one Lua script, so parallel
guesses through several processes get no more tries than one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cluster.faults import REDIS_FAULTS
from cluster.state.shared import NOW_MS, RedisShared, new_slot
from state.wrong_codes import ACQUIRE_WAIT_S, MAX_WRONG, WINDOW_S

#: A lookup in progress holds its slot at most this long (a process that died mid-lookup).
PENDING_TTL_S = 30.0
#: How often a waiting lookup looks again for slots freed by another process.
WAIT_POLL_S = 0.1
_MAX_WAITING_IPS = 10_000

# KEYS: wrong codes (score: when), lookups in progress (score: expiry).
# ARGV: limit, window ms, slot id, pending ttl ms.
# → {1} reserved | {0, wrong} held by lookups in progress | {0, wrong, wait s} refused.
_RESERVE_LOOKUP = (
    NOW_MS
    + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local wrong = redis.call('ZCARD', KEYS[1])
if wrong + redis.call('ZCARD', KEYS[2]) < limit then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
  return {1}
end
if wrong < limit then
  return {0, wrong}
end
local oldest = redis.call('ZRANGE', KEYS[1], wrong - limit, wrong - limit, 'WITHSCORES')
return {0, wrong, math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))}
"""
)

# KEYS: wrong codes, lookups in progress. ARGV: slot id, "1" when wrong, window ms.
_FINISH_LOOKUP = (
    NOW_MS
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""
)


class RedisWrongCodes:
    """:class:`state.wrong_codes.WrongCodes` for every process of a cluster."""

    def __init__(
        self, shared: RedisShared, *, limit: int = MAX_WRONG, window: float = WINDOW_S
    ) -> None:
        self._shared = shared
        self.limit = limit
        self.window = window
        self._reserve = shared.client.register_script(_RESERVE_LOOKUP)
        self._finish = shared.client.register_script(_FINISH_LOOKUP)
        self._held: dict[str, list[str]] = {}  # this process's lookups in progress, by IP
        self._changed: dict[str, asyncio.Event] = {}  # set when one of them finishes

    def _keys(self, ip: str) -> list[str]:
        return [self._shared.key("wrong-codes", ip), self._shared.key("wrong-codes-pending", ip)]

    async def acquire(self, ip: str, wait: float = ACQUIRE_WAIT_S) -> int | None:
        """A slot for one lookup (``None``), or the seconds to wait before trying again.
        A budget held only by lookups in progress (on any process) is waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        window_ms = int(self.window * 1000)
        while True:
            slot = new_slot()
            try:
                answer: list[Any] = await self._reserve(
                    keys=self._keys(ip),
                    args=[self.limit, window_ms, slot, int(PENDING_TTL_S * 1000)],
                )
            except REDIS_FAULTS as exc:
                raise self._shared.fault("wrong_codes", exc) from None
            if int(answer[0]) == 1:
                self._held.setdefault(ip, []).append(slot)
                return None
            if len(answer) > 2:
                return int(answer[2])
            remaining = deadline - loop.time()
            if remaining <= 0:
                return 1
            # Woken by a lookup of this process finishing; another process's is seen by
            # looking again shortly (so forgetting the events, as below, loses nothing).
            if ip not in self._changed and len(self._changed) >= _MAX_WAITING_IPS:
                self._changed.clear()
            changed = self._changed.setdefault(ip, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, WAIT_POLL_S))

    async def finish(self, ip: str, *, wrong: bool) -> None:
        """The lookup's answer is known: give its slot back, counting it when wrong."""
        held = self._held.get(ip)
        slot = held.pop() if held else new_slot()
        if not held:
            self._held.pop(ip, None)
        changed = self._changed.pop(ip, None)
        try:
            await self._finish(
                keys=self._keys(ip), args=[slot, "1" if wrong else "0", int(self.window * 1000)]
            )
        except REDIS_FAULTS as exc:  # the slot expires by itself; the wrong code is lost
            self._shared.health.failed("wrong_codes", exc)
        finally:
            if changed is not None:
                changed.set()
