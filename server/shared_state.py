"""Cluster mode's shared state: what one process keeps in memory, kept in Redis instead, so
that N processes behind a load balancer enforce one set of limits and revocations.

Installed by :func:`shared_state` (a ``cleanup_ctx`` after the Redis client's) only when
``app[REDIS]`` is set; without ``CERO_REDIS_URL`` the in-memory classes stay in place.

- **Session revocation** (:class:`RedisRevocations`): a revoked or signed-out session gets a
  key ``revoked:<id>`` living as long as a cookie cache entry (5 minutes), checked on every
  cookie-cache hit, and is published on ``revocations`` so every process ends that
  session's sockets and streams at once (:meth:`SessionStore.note_revoked`).
- **OAuth states** (:class:`RedisOAuthStates`): ``SET NX EX 600`` makes each GitHub state
  single-use across processes (the state itself travels in the signed cookie, so any
  process's callback accepts it).
- **Wrong user codes** (:class:`RedisWrongCodes`): two sorted sets per IP key (decided
  wrong codes, and lookups in progress with an expiry), checked and reserved by one Lua
  script, so parallel guesses through several processes get no more tries than one.
- **Moving windows** (:class:`RedisWindow`): device codes issued and sign-in requests per
  IP, sends per minute and new conversations per hour per user: the ``limits`` package's
  moving window on its Redis storage, sharing our pool.
- **Concurrent generations per user** (:class:`RedisUserLimits`): a sorted set of slots per
  user, each with an expiry renewed every :data:`SLOT_RENEW_S` while held, so a process that
  dies frees its users' slots within :data:`SLOT_TTL_S`.
- **Open live connections per user and per IP** (:class:`RedisStreamLimits`): the same
  leases, in two sorted sets (the user's, the address's) taken together by one script.

Times inside scripts are Redis's ``TIME``: one clock for every process. When Redis fails,
what admits work answers ``503 not_ready`` (closed), what only relaxes a check (a cookie
cache hit) falls back to the database (also for a cache's lifetime after the fault: a
restarted Redis has forgotten its revocations), and what gives something back (a slot, a
pending lookup) expires by itself.
Why one module of ~700 lines: the six parts are small and share one fault policy (the
paragraph above), one key prefix and one installer; each is the Redis twin of an
in-memory class elsewhere, and this file is where a reader compares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as redis
import structlog
from aiohttp import web
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter, Gauge

from cluster.faults import REDIS_FAULTS
from server.auth.cookies import CACHE_TTL_S
from server.auth.github import STATE_TTL_S
from server.auth.keys import LIMITER, OAUTH_STATES
from server.core.app_keys import METRICS, REDIS, REDIS_HEALTH, SESSIONS, SETTINGS, USER_LIMITS
from server.core.errors import ApiError
from server.core.ids import new_id, token_hash
from server.limits.rate_limit import ACQUIRE_WAIT_S, MAX_WRONG, WINDOW_S
from server.limits.stream_limits import STREAM_LIMITS, StreamLimits, StreamSlot
from server.limits.user_limits import (
    HOUR_S,
    MINUTE_S,
    GenerationCounter,
    GenerationSlot,
    UserLimits,
)
from server.redis_conn import RedisHealth, not_ready

log = structlog.get_logger(__name__)

#: A lookup in progress holds its slot at most this long (a process that died mid-lookup).
PENDING_TTL_S = 30.0
#: How often a waiting lookup looks again for slots freed by another process.
WAIT_POLL_S = 0.1
#: A generation slot not renewed for this long is free again (its process died).
SLOT_TTL_S = 30.0
SLOT_RENEW_S = SLOT_TTL_S / 3
#: Before re-subscribing to revocations after Redis failed.
RESUBSCRIBE_S = 1.0
_MAX_WAITING_IPS = 10_000
_MAX_UNPUBLISHED = 100_000

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: wrong codes (score: when), lookups in progress (score: expiry).
# ARGV: limit, window ms, slot id, pending ttl ms.
# → {1} reserved | {0, wrong} held by lookups in progress | {0, wrong, wait s} refused.
_RESERVE_LOOKUP = (
    _NOW_MS
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
    _NOW_MS
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""
)

# KEYS: the user's slots (score: expiry). ARGV: limit, slot id, ttl ms. → 1 taken, 0 full.
_TAKE_SLOT = (
    _NOW_MS
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

# KEYS: the user's slots. ARGV: ttl ms, slot ids... Added back when missing: a Redis that
# restarted lost them, and they still run (a slot given back meanwhile may come back for
# one ttl at most).
_RENEW_SLOTS = (
    _NOW_MS
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
)


# KEYS: the user's streams, the address's streams (score: expiry).
# ARGV: user limit, address limit, slot id, ttl ms. → 1 taken, 0 user full, -1 address full.
_TAKE_STREAM = (
    _NOW_MS
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


class _Shared:
    """What every Redis-backed piece holds: the client, the health to report faults to,
    and the key prefix."""

    def __init__(self, client: redis.Redis, health: RedisHealth, prefix: str) -> None:
        self.client = client
        self.health = health
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def fault(self, op: str, exc: BaseException) -> ApiError:
        self.health.failed(op, exc)
        return not_ready()


# -- sessions -------------------------------------------------------------------------------


class RedisRevocations(_Shared):
    """Revoked sessions, seen by every process (see the module docstring)."""

    def __init__(self, client: redis.Redis, health: RedisHealth, prefix: str) -> None:
        super().__init__(client, health, prefix)
        self.channel = self.key("revocations")
        # Revocations Redis did not take (it was down): published again when it returns.
        self._unpublished: dict[str, float] = {}

    async def publish(self, session_id: str) -> None:
        """Mark ``session_id`` revoked for every process's cookie cache and tell them."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.key("revoked", session_id), 1, ex=CACHE_TTL_S)
                pipe.publish(self.channel, session_id)
                await pipe.execute()
        except REDIS_FAULTS as exc:
            self.health.failed("revoke", exc)
            if len(self._unpublished) >= _MAX_UNPUBLISHED:
                self._unpublished.pop(next(iter(self._unpublished)))
            self._unpublished[session_id] = time.monotonic()
            log.warning("revocation_not_shared", session_id=session_id)

    async def revoked(self, session_id: str) -> bool:
        """Revoked by any process within a cookie cache's lifetime. ``True`` also when
        that cannot be known, and the caller then asks the database: while Redis does not
        answer, and for a cookie cache's lifetime after it failed (a Redis that restarted
        forgot the revocations it held)."""
        if self.health.since_fault() < CACHE_TTL_S:
            return True
        try:
            return bool(await self.client.exists(self.key("revoked", session_id)))
        except REDIS_FAULTS as exc:
            self.health.failed("revoked", exc)
            return True

    async def _republish(self) -> None:
        now = time.monotonic()
        pending = {s: t for s, t in self._unpublished.items() if now - t < CACHE_TTL_S}
        self._unpublished = {}
        for session_id in pending:
            await self.publish(session_id)

    async def listen(self, on_revoked: Callable[[str], None], received: Counter) -> None:
        """Call ``on_revoked(session_id)`` for each revocation published by any process
        (this one's included: harmless). Re-subscribes after Redis failures."""
        while True:
            try:
                async with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._republish()
                    async for message in pubsub.listen():
                        data = message.get("data")
                        if isinstance(data, bytes):
                            received.inc()
                            on_revoked(data.decode("ascii", "replace"))
            except REDIS_FAULTS as exc:
                self.health.failed("revocations_subscribe", exc)
            await asyncio.sleep(RESUBSCRIBE_S)


# -- GitHub sign-in ---------------------------------------------------------------------------


class RedisOAuthStates(_Shared):
    async def spend(self, state: str) -> bool:
        """True the first time ``state`` is spent on any process, False on any reuse."""
        try:
            won = await self.client.set(
                self.key("oauth-state", token_hash(state)), 1, nx=True, ex=int(STATE_TTL_S)
            )
        except REDIS_FAULTS as exc:
            raise self.fault("oauth_state", exc) from None
        return bool(won)


# -- wrong user codes -------------------------------------------------------------------------


class RedisWrongCodes(_Shared):
    """:class:`server.limits.rate_limit.WrongCodeLimiter`'s rules, counted in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        health: RedisHealth,
        prefix: str,
        *,
        limit: int = MAX_WRONG,
        window: float = WINDOW_S,
    ) -> None:
        super().__init__(client, health, prefix)
        self.limit = limit
        self.window = window
        self._reserve = client.register_script(_RESERVE_LOOKUP)
        self._finish = client.register_script(_FINISH_LOOKUP)
        self._held: dict[str, list[str]] = {}  # this process's lookups in progress, by IP
        self._changed: dict[str, asyncio.Event] = {}  # set when one of them finishes

    def _keys(self, ip: str) -> list[str]:
        return [self.key("wrong-codes", ip), self.key("wrong-codes-pending", ip)]

    async def acquire(self, ip: str, wait: float = ACQUIRE_WAIT_S) -> int | None:
        """A slot for one lookup (``None``), or the seconds to wait before trying again.
        A budget held only by lookups in progress (on any process) is waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        window_ms = int(self.window * 1000)
        while True:
            slot = new_id()
            try:
                answer: list[Any] = await self._reserve(
                    keys=self._keys(ip),
                    args=[self.limit, window_ms, slot, int(PENDING_TTL_S * 1000)],
                )
            except REDIS_FAULTS as exc:
                raise self.fault("wrong_codes", exc) from None
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
        slot = held.pop() if held else new_id()
        if not held:
            self._held.pop(ip, None)
        changed = self._changed.pop(ip, None)
        try:
            await self._finish(
                keys=self._keys(ip), args=[slot, "1" if wrong else "0", int(self.window * 1000)]
            )
        except REDIS_FAULTS as exc:  # the slot expires by itself; the wrong code is lost
            self.health.failed("wrong_codes", exc)
        finally:
            if changed is not None:
                changed.set()


# -- moving windows (limits) ------------------------------------------------------------------


def window_limiter(client: redis.Redis, prefix: str) -> MovingWindowRateLimiter:
    """The ``limits`` moving-window strategy on its Redis storage, over our client's pool."""
    # limits types its client options as scalars; a connection pool is accepted too.
    options: dict[str, Any] = {"connection_pool": client.connection_pool}
    storage = RedisStorage(
        "async+redis://", implementation="redispy", key_prefix=f"{prefix}limits", **options
    )
    return MovingWindowRateLimiter(storage)


class RedisWindow:
    """At most ``limit`` events per key in any ``window`` seconds, on every process."""

    def __init__(
        self,
        limiter: MovingWindowRateLimiter,
        health: RedisHealth,
        name: str,
        limit: int,
        window: float,
    ) -> None:
        self._limiter = limiter
        self.health = health
        self.name = name
        self.limit = limit
        self._item = RateLimitItemPerSecond(limit, max(1, math.ceil(window)), namespace=name)

    async def hit(self, key: str) -> int | None:
        """Count one event: ``None`` when allowed, else the seconds to wait (a refused
        event is not counted)."""
        try:
            if await self._limiter.hit(self._item, key):
                return None
            stats = await self._limiter.get_window_stats(self._item, key)
        except REDIS_FAULTS as exc:
            self.health.failed(self.name, exc)
            raise not_ready() from None
        return max(1, math.ceil(stats.reset_time - time.time()))


# -- per-user chat limits ---------------------------------------------------------------------


class _HeldSlots(GenerationCounter):
    """What :attr:`UserLimits.generations` answers in cluster mode: the limit, and the
    generations running for a user *in this process* (its slots held in Redis)."""

    def __init__(self, limit: int, held: dict[str, set[str]]) -> None:
        super().__init__(limit)
        self._held = held

    def running(self, user_id: str) -> int:
        return len(self._held.get(user_id, ()))


class _SlotLeases:
    """The renewal both kinds of slots share (generations, open streams): every slot this
    process holds is a member of one or more sorted sets scored by its expiry, pushed
    forward every :data:`SLOT_RENEW_S` in one pipeline; a process that dies stops renewing
    and its slots lapse within :data:`SLOT_TTL_S`."""

    def __init__(self, shared: _Shared, op: str, held: Callable[[], dict[str, list[str]]]):
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


class RedisUserLimits(UserLimits):
    """:class:`UserLimits` counted across processes (see the module docstring)."""

    def __init__(
        self,
        shared: _Shared,
        *,
        max_generations: int,
        new_conversations: RedisWindow,
        sends: RedisWindow,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            max_generations=max_generations,
            new_conversations_per_hour=new_conversations.limit,
            sends_per_minute=sends.limit,
            on_refusal=on_refusal,
        )
        self._shared = shared
        self._conversations = new_conversations
        self._sends = sends
        self._take = shared.client.register_script(_TAKE_SLOT)
        self._held: dict[str, set[str]] = {}  # user id → this process's slot ids
        self.leases = _SlotLeases(shared, "generations_renew", self._by_key)
        self.generations = _HeldSlots(max_generations, self._held)
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, user_id: str) -> str:
        return self._shared.key("generations", user_id)

    async def reserve_generation(self, user_id: str) -> GenerationSlot:
        token = new_id()
        try:
            taken = await self._take(
                keys=[self._key(user_id)],
                args=[self.generations.limit, token, int(SLOT_TTL_S * 1000)],
            )
        except REDIS_FAULTS as exc:
            raise self._shared.fault("generations", exc) from None
        if not int(taken):
            raise self._refuse_generation()
        self._held.setdefault(user_id, set()).add(token)
        return GenerationSlot(self, user_id, token)

    def adopt_generation(self, user_id: str, token: str | None) -> GenerationSlot:
        """The slot another process reserved for a send it forwarded here (the
        conversation's owner): held, renewed and given back by this process from now on.
        It stays in Redis meanwhile (and a renewal adds it back if it went missing)."""
        if token is None:
            return super().adopt_generation(user_id, token)
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
            raise self._refuse_send(wait)

    async def admit_new_conversation(self, user_id: str) -> None:
        wait = await self._conversations.hit(user_id)
        if wait is not None:
            raise self._refuse(
                "new_conversations",
                f"At most {self._conversations.limit} new conversations per hour; "
                "continue an existing one",
                wait,
            )

    def _by_key(self) -> dict[str, list[str]]:
        return {self._key(user_id): list(tokens) for user_id, tokens in self._held.items()}

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task


# -- open streams per user and per address ----------------------------------------------------


class RedisStreamLimits(StreamLimits):
    """:class:`server.limits.stream_limits.StreamLimits` counted across processes: two sorted sets
    of slot ids (per user, per address) with expiries, taken together by one script and
    renewed while held, exactly like the generation slots."""

    def __init__(
        self,
        shared: _Shared,
        *,
        per_user: int,
        per_ip: int,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(per_user=per_user, per_ip=per_ip, on_refusal=on_refusal)
        self._shared = shared
        self._take = shared.client.register_script(_TAKE_STREAM)
        self._held: dict[str, StreamSlot] = {}  # slot id → this process's open stream
        self.leases = _SlotLeases(shared, "streams_renew", self._by_key)
        self._tasks: set[asyncio.Task[None]] = set()

    def _keys(self, user_id: str, ip: str) -> list[str]:
        return [self._shared.key("streams-user", user_id), self._shared.key("streams-ip", ip)]

    async def open(self, user_id: str, ip: str) -> StreamSlot:
        token = new_id()
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
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task


# -- wiring -----------------------------------------------------------------------------------


async def shared_state(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the Redis client's and the chat runtime's): in cluster mode,
    replace the in-memory limits, OAuth states and revocations with the Redis ones."""
    client = app[REDIS]
    if client is None:
        yield
        return
    from server.auth.device_routes import ISSUE_LIMITER
    from server.auth.sign_in_limit import SIGN_IN_LIMITER

    settings = app[SETTINGS]
    health = app[REDIS_HEALTH]
    prefix = settings.redis_prefix
    shared = _Shared(client, health, prefix)
    revocations = RedisRevocations(client, health, prefix)
    store = app[SESSIONS]
    store.shared = revocations
    app[OAUTH_STATES] = RedisOAuthStates(client, health, prefix)
    app[LIMITER] = RedisWrongCodes(client, health, prefix)
    limiter = window_limiter(client, prefix)
    app[ISSUE_LIMITER] = RedisWindow(
        limiter, health, "device-codes", settings.device_code_limit, settings.device_code_window
    )
    app[SIGN_IN_LIMITER] = RedisWindow(
        limiter, health, "sign-in", settings.sign_in_limit, settings.sign_in_window
    )
    metrics = app[METRICS]
    streams = RedisStreamLimits(
        shared,
        per_user=settings.max_streams_per_user,
        per_ip=settings.max_streams_per_ip,
        on_refusal=metrics.limit_refusals_by,
    )
    app[STREAM_LIMITS] = streams
    limits = RedisUserLimits(
        shared,
        max_generations=settings.max_generations_per_user,
        new_conversations=RedisWindow(
            limiter, health, "new-conversations", settings.new_conversations_per_hour, HOUR_S
        ),
        sends=RedisWindow(limiter, health, "sends", settings.sends_per_minute, MINUTE_S),
        on_refusal=metrics.limit_refusals_by,
    )
    app[USER_LIMITS] = limits
    received = Counter(
        "cero_revocations_received",
        "Session revocations received from Redis (published by any process)",
        registry=metrics.registry,
    )
    slots = Gauge(
        "cero_generation_slots_held",
        "Generation slots this process holds in Redis (renewed while held)",
        registry=metrics.registry,
    )
    slots.set_function(lambda: float(limits.slots_held))
    tasks = [
        asyncio.create_task(revocations.listen(store.note_revoked, received), name="revocations"),
        asyncio.create_task(limits.leases.renew_forever(), name="generation-slots"),
        asyncio.create_task(streams.leases.renew_forever(), name="stream-slots"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await limits.close()
        await streams.close()
