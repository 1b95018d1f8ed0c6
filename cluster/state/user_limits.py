"""Per-user chat limits in Redis: a sorted set of generation slots per user, each with an
expiry renewed every :data:`cluster.state.shared.SLOT_RENEW_S` while held (so a process that
dies frees its users' slots within :data:`cluster.state.shared.SLOT_TTL_S`), and two moving
windows (:class:`cluster.state.window.RedisWindow`) for sends and new conversations."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cluster.faults import REDIS_FAULTS
from cluster.state.shared import NOW_MS, SLOT_TTL_S, RedisShared, SlotLeases, new_slot
from cluster.state.window import RedisWindow
from state.user_limits import GenerationCounter, GenerationSlot, UserLimitRefusals

# KEYS: the user's slots (score: expiry). ARGV: limit, slot id, ttl ms. → 1 taken, 0 full.
_TAKE_SLOT = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
)


class _HeldSlots(GenerationCounter):
    """What :attr:`RedisUserLimits.generations` answers: the limit, and the generations
    running for a user *in this process* (its slots held in Redis)."""

    def __init__(self, limit: int, held: dict[str, set[str]]) -> None:
        super().__init__(limit)
        self._held = held

    def running(self, user_id: str) -> int:
        return len(self._held.get(user_id, ()))


class RedisUserLimits(UserLimitRefusals):
    """:class:`state.user_limits.UserLimits` counted across processes."""

    def __init__(
        self,
        shared: RedisShared,
        *,
        max_generations: int,
        new_conversations: RedisWindow,
        sends: RedisWindow,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(on_refusal)
        self._shared = shared
        self._conversations = new_conversations
        self._sends = sends
        self._take = shared.client.register_script(_TAKE_SLOT)
        self._held: dict[str, set[str]] = {}  # user id → this process's slot ids
        self.leases = SlotLeases(shared, "generations_renew", self._by_key)
        self._generations = _HeldSlots(max_generations, self._held)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def generations(self) -> GenerationCounter:
        return self._generations

    def _key(self, user_id: str) -> str:
        return self._shared.key("generations", user_id)

    async def reserve_generation(self, user_id: str) -> GenerationSlot:
        token = new_slot()
        try:
            taken = await self._take(
                keys=[self._key(user_id)],
                args=[self._generations.limit, token, int(SLOT_TTL_S * 1000)],
            )
        except REDIS_FAULTS as exc:
            raise self._shared.fault("generations", exc) from None
        if not int(taken):
            raise self._refuse_generation(self._generations.limit)
        self._held.setdefault(user_id, set()).add(token)
        return GenerationSlot(self, user_id, token)

    def adopt_generation(self, user_id: str, token: str | None) -> GenerationSlot:
        """The slot another process reserved for a send it forwarded here (the
        conversation's owner): held, renewed and given back by this process from now on.
        It stays in Redis meanwhile (and a renewal adds it back if it went missing)."""
        if token is None:
            return self._generations.adopt(user_id)
        self._held.setdefault(user_id, set()).add(token)
        return GenerationSlot(self, user_id, token)

    @property
    def slots_held(self) -> int:
        """Generation slots this process holds (all users)."""
        return sum(len(tokens) for tokens in self._held.values())

    def _release(self, user_id: str, token: str | None = None) -> None:
        """Called synchronously by :meth:`GenerationSlot.release`: forget the slot here and
        remove it from Redis in the background (if that fails, it expires)."""
        self._forget(user_id, token)
        if token is None:
            return
        task = asyncio.get_running_loop().create_task(self._remove(user_id, token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, user_id: str, token: str | None = None) -> None:
        """No longer this process's slot to renew (it stays in Redis)."""
        held = self._held.get(user_id)
        if held is not None and token is not None:
            held.discard(token)
            if not held:
                del self._held[user_id]

    async def _remove(self, user_id: str, token: str) -> None:
        try:
            await self._shared.client.zrem(self._key(user_id), token)
        except REDIS_FAULTS as exc:
            self._shared.health.failed("generations_release", exc)

    async def admit_send(self, user_id: str) -> None:
        wait = await self._sends.hit(user_id)
        if wait is not None:
            raise self._refuse_send(self._sends.limit, wait)

    async def admit_new_conversation(self, user_id: str) -> None:
        wait = await self._conversations.hit(user_id)
        if wait is not None:
            raise self._refuse_new_conversation(self._conversations.limit, wait)

    def _by_key(self) -> dict[str, list[str]]:
        return {self._key(user_id): list(tokens) for user_id, tokens in self._held.items()}

    async def close(self) -> None:
        """Wait for the slots given back in the background."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
