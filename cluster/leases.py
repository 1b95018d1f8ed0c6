"""Leases and fencing: which process owns a conversation.

A conversation is owned by the process holding its ``lease`` key (``SET NX PX`` plus a
fencing token from ``INCR``, and the log's epoch when it has none: one Lua step,
:mod:`cluster.scripts`, queued by :meth:`Leases.queue_take` in the same pipeline as the
reads that bring the hub up to the log, so taking a conversation is one round trip); the
value is ``<node id>:<fence>``. :meth:`Leases.renew_forever` extends every lease this process holds
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
from typing import Any, cast

import structlog
from redis.exceptions import NoScriptError, RedisError

from cluster import scripts
from cluster.keys import NodeContext
from cluster.lua import Lua, raise_unloaded
from cluster.mirror import ClusterEventLog
from cluster.wire import text

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Held:
    """A lease this process holds."""

    value: str
    fence: int
    hub: ClusterEventLog


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
        self._acquire = Lua(client, scripts.ACQUIRE)
        self._renew = Lua(client, scripts.RENEW)
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

    def queue_take(self, pipe: Any, conversation_id: str, epoch: str) -> None:
        """The lease with a new fencing token, on ``pipe`` (its answer goes to
        :meth:`taken_from`); the log's epoch is set to ``epoch`` in the same step when it
        has none, and then announced on the epoch notices (``Keys.epochs``)."""
        cid = conversation_id
        self._acquire.queue(
            pipe,
            [
                self.keys.lease(cid),
                self.keys.fence,
                self.keys.last(cid),
                self.keys.epoch(cid),
                self.keys.epochs,
            ],
            [self.node_id, self.ttl_ms, self.log_ttl_ms, epoch, cid, scripts.NOTICES_KEPT],
        )

    async def load_scripts(self) -> None:
        await self._acquire.load()

    def taken_from(self, answer: Any) -> Held | None:
        """:meth:`queue_take`'s answer: the lease, or ``None`` when another process holds
        it (its ``hub`` is set on use)."""
        if answer is None:
            return None
        if isinstance(answer, BaseException):
            raise answer
        fence = int(answer[0])
        self.taken += 1
        return Held(f"{self.node_id}:{fence}", fence, cast(ClusterEventLog, None))

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)  # the renewal's period, by design
            await self.renew()

    async def renew(self) -> None:
        """Every lease held, one pipeline; sent again at once when Redis had lost the
        script (a restart), since a ``NOSCRIPT`` answer is no refusal."""
        for _ in range(2):
            try:
                await self._renew_all()
                return
            except NoScriptError:
                continue
            except RedisError as exc:
                log.warning("lease_renew_failed", error=repr(exc)[:200])
                return

    async def _renew_all(self) -> None:
        held = list(self.held.items())
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, lease in held:
                self._renew.queue(
                    pipe,
                    [self.keys.lease(cid), self.keys.last(cid)],
                    [lease.value, self.ttl_ms, lease.fence, self.log_ttl_ms],
                )
            results = await pipe.execute(raise_on_error=False)
        await raise_unloaded(results, (self._renew,))
        for (cid, lease), result in zip(held, results, strict=True):
            if result == 2:
                log.warning("lease_taken_back", conversation_id=cid, fence=lease.fence)
            elif result != 1 and self.held.get(cid) is lease:
                self.lost += 1
                self._lost(cid, f"renew refused: {result!r}"[:200])
