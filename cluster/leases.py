"""Leases and fencing: which process owns a conversation.

A conversation is owned by the process holding its ``lease`` key (``SET NX PX`` plus a
fencing token from ``INCR``, one Lua step, :mod:`cluster.scripts`); the value is
``<node id>:<fence>``. :meth:`Leases.renew_forever` extends every lease this process holds
every third of ``CERO_LEASE_TTL`` (a Lua check-and-extend, one pipeline for all); a
renewal refused (the lease is someone else's) is reported to ``lost``, which stops the
owner at once. A lease key that vanished while nobody else held the conversation (Redis
restarted empty) is taken back with the same token, so a Redis restart does not stop
running answers. The fence is what every append and every row write of a generation is
checked against (:meth:`Leases.fence_of`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog
from redis.exceptions import RedisError

from cluster import scripts
from cluster.keys import NodeContext
from cluster.mirror import ClusterHub
from cluster.wire import text

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Held:
    """A lease this process holds."""

    value: str
    fence: int
    hub: ClusterHub


class Leases:
    def __init__(
        self,
        ctx: NodeContext,
        *,
        lease_ttl: float,
        log_ttl_ms: int,
        lost: Callable[[str, str], None],
    ) -> None:
        self.redis, self.keys, self.node_id = ctx.redis, ctx.keys, ctx.node_id
        client = ctx.redis
        self.lease_ttl = lease_ttl
        self.ttl_ms = max(1, int(lease_ttl * 1000))
        self.log_ttl_ms = log_ttl_ms
        self._lost = lost  # (conversation id, reason)
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        #: The leases this process holds, by conversation.
        self.held: dict[str, Held] = {}
        #: Leases taken and lost (renewal refused) since start: counters in /metrics.
        self.taken = 0
        self.lost = 0

    def fence_of(self, conversation_id: str) -> int:
        held = self.held.get(conversation_id)
        return 0 if held is None else held.fence

    async def owner_of(self, conversation_id: str) -> str | None:
        """The node id holding the lease (``None``: nobody)."""
        value = await self.redis.get(self.keys.lease(conversation_id))
        if value is None:
            return None
        return text(value).rpartition(":")[0]

    async def exists(self, conversation_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.lease(conversation_id)))

    async def take(self, conversation_id: str) -> Held | None:
        """The lease with a new fencing token, or ``None`` when another process holds it."""
        token = await self._acquire(
            keys=[
                self.keys.lease(conversation_id),
                self.keys.fence,
                self.keys.last(conversation_id),
            ],
            args=[self.node_id, self.ttl_ms, self.log_ttl_ms],
        )
        if token is None:
            return None
        fence = int(token)
        self.taken += 1
        return Held(f"{self.node_id}:{fence}", fence, cast(ClusterHub, None))  # set on use

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)  # the renewal's period, by design
            await self.renew()

    async def renew(self) -> None:
        held = list(self.held.items())
        if not held:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid, lease in held:
                    await self._renew(
                        keys=[self.keys.lease(cid), self.keys.last(cid)],
                        args=[lease.value, self.ttl_ms, lease.fence, self.log_ttl_ms],
                        client=pipe,
                    )
                results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            log.warning("lease_renew_failed", error=repr(exc)[:200])
            return
        for (cid, lease), result in zip(held, results, strict=True):
            if result == 2:
                log.warning("lease_taken_back", conversation_id=cid, fence=lease.fence)
            elif result != 1 and self.held.get(cid) is lease:
                self.lost += 1
                self._lost(cid, f"renew refused: {result!r}"[:200])
