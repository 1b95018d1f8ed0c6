"""What every Redis-backed piece of shared state holds (:class:`RedisShared`: the client,
the health to report faults to, the key prefix), the clock every script reads
(:data:`NOW_MS`), and the slot leases generations and open streams share
(:class:`SlotLeases`)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import redis.asyncio as redis

from cluster.faults import REDIS_FAULTS
from cluster.state.connection import RedisHealth
from state.errors import Unavailable

#: A generation or stream slot not renewed for this long is free again (its process died).
SLOT_TTL_S = 30.0
SLOT_RENEW_S = SLOT_TTL_S / 3

#: Lua: ``now`` in milliseconds, by Redis's clock (one clock for every process).
NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the slots (score: expiry). ARGV: ttl ms, slot ids... Added back when missing: a
# Redis that restarted lost them, and they still run (a slot given back meanwhile may come
# back for one ttl at most).
_RENEW_SLOTS = (
    NOW_MS
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
)


def new_slot() -> str:
    """A slot's (or a lookup's) id in a sorted set: 144 random bits, URL-safe."""
    return secrets.token_urlsafe(18)


class RedisShared:
    """The client, the health to report faults to, and the key prefix."""

    def __init__(self, client: redis.Redis, health: RedisHealth, prefix: str) -> None:
        self.client = client
        self.health = health
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def fault(self, op: str, exc: BaseException) -> Unavailable:
        """Report the failed command ``op``; the refusal to raise (closed, never open)."""
        self.health.failed(op, exc)
        return Unavailable(op)


class SlotLeases:
    """The renewal both kinds of slots share (generations, open streams): every slot this
    process holds is a member of one or more sorted sets scored by its expiry, pushed
    forward every :data:`SLOT_RENEW_S` in one pipeline; a process that dies stops renewing
    and its slots lapse within :data:`SLOT_TTL_S`."""

    def __init__(
        self, shared: RedisShared, op: str, held: Callable[[], dict[str, list[str]]]
    ) -> None:
        self._shared = shared
        self._op = op  # cero_redis_errors{op}
        self._held = held  # sorted-set key → this process's slot ids in it
        self._renew = shared.client.register_script(_RENEW_SLOTS)

    async def renew(self) -> None:
        """Push the expiry of every slot this process holds (one pipeline)."""
        by_key = self._held()
        if not by_key:
            return
        try:
            async with self._shared.client.pipeline(transaction=False) as pipe:
                for key, tokens in by_key.items():
                    await self._renew(
                        keys=[key], args=[int(SLOT_TTL_S * 1000), *tokens], client=pipe
                    )
                await pipe.execute()
        except REDIS_FAULTS as exc:
            self._shared.health.failed(self._op, exc)

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(SLOT_RENEW_S)
            await self.renew()
