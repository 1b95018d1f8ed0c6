"""Presence across processes: viewers on every process summed.

Each process keeps its viewer count per conversation in a Redis hash (field: its node
id; refreshed every ttl, expiring after three), and the owner publishes the sum once a
second when it changed: a dead process's viewers drop out within three ttls plus a second
(31 s by default).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from redis.exceptions import RedisError

from cluster.keys import NodeContext
from cluster.mirror import ClusterEventLog
from cluster.wire import sum_viewers

log = structlog.get_logger(__name__)


class ViewerCounts:
    def __init__(
        self,
        ctx: NodeContext,
        lease_ttl: float,
        owned: Callable[[], list[tuple[str, ClusterEventLog]]],
    ) -> None:
        self.redis, self.keys, self.node_id = ctx.redis, ctx.keys, ctx.node_id
        self.lease_ttl = lease_ttl
        self._owned = owned  # the hubs this process owns
        #: Hubs whose local viewer count changed or must be refreshed.
        self._viewing: dict[str, ClusterEventLog] = {}
        self._dirty: set[str] = set()

    def changed(self, hub: ClusterEventLog) -> None:
        self._viewing[hub.conversation_id] = hub
        self._dirty.add(hub.conversation_id)

    async def run(self) -> None:
        """Once a second: write this process's changed viewer counts (all of them every
        ttl), then let each owned conversation publish the cluster-wide sum."""
        expiry_ms = int(self.lease_ttl * 3000)
        refresh_every = max(1, int(self.lease_ttl))
        rounds = 0
        while True:
            await asyncio.sleep(1.0)  # the publishing pace (debounce), by design
            rounds += 1
            refresh = rounds % refresh_every == 0
            now_ms = int(time.time() * 1000)
            writes = [
                (cid, hub)
                for cid, hub in list(self._viewing.items())
                if refresh or cid in self._dirty
            ]
            self._dirty.clear()
            owned = self._owned()
            if not writes and not owned:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for cid, hub in writes:
                        key = self.keys.viewers(cid)
                        if hub.local_viewers:
                            value = f"{hub.local_viewers}:{now_ms + expiry_ms}"
                            pipe.hset(key, self.node_id, value)
                            pipe.pexpire(key, expiry_ms)
                        else:
                            pipe.hdel(key, self.node_id)
                    for cid, _ in owned:
                        pipe.hgetall(self.keys.viewers(cid))
                    results = await pipe.execute()
            except RedisError as exc:
                log.warning("presence_failed", error=repr(exc)[:200])
                continue
            for cid, hub in writes:
                if not hub.local_viewers and self._viewing.get(cid) is hub:
                    del self._viewing[cid]
            for (_, hub), shares in zip(owned, results[len(results) - len(owned) :], strict=True):
                hub.publish_viewers(sum_viewers(shares, now_ms))
