"""Open live connections per user and per address in Redis: the generation slots' leases,
in two sorted sets (the user's, the address's) taken together by one script."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cluster.faults import REDIS_FAULTS
from cluster.state.shared import NOW_MS, SLOT_TTL_S, RedisShared, SlotLeases, new_slot
from state.stream_limits import StreamLimitRefusals, StreamSlot

# KEYS: the user's streams, the address's streams (score: expiry).
# ARGV: user limit, address limit, slot id, ttl ms. → 1 taken, 0 user full, -1 address full.
_TAKE_STREAM = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return -1
end
local expiry = now + tonumber(ARGV[4])
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], expiry, ARGV[3])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[4]))
end
return 1
"""
)


class RedisStreamLimits(StreamLimitRefusals):
    """:class:`state.stream_limits.StreamLimits` counted across processes: two sorted sets
    of slot ids (per user, per address) with expiries, taken together by one script and
    renewed while held, exactly like the generation slots."""

    def __init__(
        self,
        shared: RedisShared,
        *,
        per_user: int,
        per_ip: int,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(per_user=per_user, per_ip=per_ip, on_refusal=on_refusal)
        self._shared = shared
        self._take = shared.client.register_script(_TAKE_STREAM)
        self._held: dict[str, StreamSlot] = {}  # slot id → this process's open stream
        self.leases = SlotLeases(shared, "streams_renew", self._by_key)
        self._tasks: set[asyncio.Task[None]] = set()

    def _keys(self, user_id: str, ip: str) -> list[str]:
        return [self._shared.key("streams-user", user_id), self._shared.key("streams-ip", ip)]

    async def open(self, user_id: str, ip: str) -> StreamSlot:
        token = new_slot()
        try:
            taken = int(
                await self._take(
                    keys=self._keys(user_id, ip),
                    args=[self.per_user, self.per_ip, token, int(SLOT_TTL_S * 1000)],
                )
            )
        except REDIS_FAULTS as exc:
            raise self._shared.fault("streams", exc) from None
        if taken == 0:
            raise self._refuse_user()
        if taken < 0:
            raise self._refuse_ip()
        slot = StreamSlot(self, user_id, ip, token)
        self._held[token] = slot
        return slot

    def open_for_user(self, user_id: str) -> int:
        return sum(1 for slot in self._held.values() if slot.user_id == user_id)

    @property
    def slots_held(self) -> int:
        return len(self._held)

    def _release(self, slot: StreamSlot) -> None:
        """Forget the slot here and remove it from Redis in the background (if that
        fails, it expires)."""
        if slot.token is None or self._held.pop(slot.token, None) is None:
            return
        task = asyncio.get_running_loop().create_task(self._remove(slot, slot.token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, slot: StreamSlot, token: str) -> None:
        try:
            async with self._shared.client.pipeline(transaction=False) as pipe:
                for key in self._keys(slot.user_id, slot.ip):
                    pipe.zrem(key, token)
                await pipe.execute()
        except REDIS_FAULTS as exc:
            self._shared.health.failed("streams_release", exc)

    def _by_key(self) -> dict[str, list[str]]:
        by_key: dict[str, list[str]] = {}
        for token, slot in self._held.items():
            for key in self._keys(slot.user_id, slot.ip):
                by_key.setdefault(key, []).append(token)
        return by_key

    async def close(self) -> None:
        """Wait for the slots given back in the background."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
