"""Presence across processes: viewers on every process summed.

Each process keeps its viewer count per conversation in a Redis hash (field: its node
id, value ``<count>:<expiry ms>``; refreshed every ttl, expiring after three), and the
owner publishes the sum once a second when it changed: a dead process's viewers drop out
within three ttls plus a second (31 s by default).

The owner reads a conversation's hash only when the sum may have changed, not every
second: when its own count changed, when another process announced a change of its count
(a presence notice, ``Keys.presence``, written in the same pipeline as that count and read
by the relay's blocking read, :mod:`cluster.relay`: no round trip of its own), when the
first share it counted expires (a dead process's share drops out as before), when it
became the owner, and at the latest every three ttls (a notice lost while Redis was
away).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from redis.exceptions import RedisError

from cluster.keys import NodeContext
from cluster.mirror import ClusterEventLog
from cluster.wire import sum_viewers, text

log = structlog.get_logger(__name__)

#: Presence notices kept (``MAXLEN ~``): a relay that could not read them for longer than
#: it takes to write this many misses the oldest (their owners re-read within three ttls).
NOTICES_KEPT = 1000


def first_expiry(shares: object, now_ms: int) -> int | None:
    """The earliest expiry (ms) of the unexpired shares (``None``: none)."""
    first: int | None = None
    for raw in (shares if isinstance(shares, dict) else {}).values():
        _, _, expires = text(raw).partition(":")
        if expires.isdigit() and int(expires) > now_ms:
            first = int(expires) if first is None else min(first, int(expires))
    return first


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
        #: Conversations another process announced a changed count of.
        self._noticed: set[str] = set()
        #: Owned conversations read: the hub read for, and when to read again (ms).
        self._read_at: dict[str, tuple[ClusterEventLog, int]] = {}
        #: Hashes read by the owner (``HGETALL``) since start.
        self.reads = 0
        self._rounds = 0

    def changed(self, hub: ClusterEventLog) -> None:
        self._viewing[hub.conversation_id] = hub
        self._dirty.add(hub.conversation_id)

    def noticed(self, conversation_ids: list[str]) -> None:
        """Presence notices the relay read: another process's count changed there."""
        self._noticed.update(conversation_ids)

    async def run(self) -> None:
        """Once a second: write this process's changed viewer counts (all of them every
        ttl), then let each owned conversation whose sum may have changed publish it."""
        while True:
            await asyncio.sleep(1.0)  # the publishing pace (debounce), by design
            await self.round()

    async def round(self, *, refresh: bool | None = None) -> None:
        """One pass of :meth:`run` (``refresh``: write every count, not only the changed;
        by default every ttl)."""
        expiry_ms = int(self.lease_ttl * 3000)
        if refresh is None:
            self._rounds += 1
            refresh = self._rounds % max(1, int(self.lease_ttl)) == 0
        now_ms = int(time.time() * 1000)
        dirty, self._dirty = self._dirty, set()
        noticed, self._noticed = self._noticed, set()
        writes = [(cid, hub) for cid, hub in list(self._viewing.items()) if refresh or cid in dirty]
        owned = self._owned()
        owned_ids = {cid for cid, _ in owned}
        for cid in [cid for cid in self._read_at if cid not in owned_ids]:
            del self._read_at[cid]
        reads = []
        for cid, hub in owned:
            read = self._read_at.get(cid)
            if (
                read is None
                or read[0] is not hub
                or now_ms >= read[1]
                or cid in dirty
                or cid in noticed
            ):
                reads.append((cid, hub))
        if not writes and not reads:
            return
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
                    if cid in dirty and cid not in owned_ids:
                        # The owner elsewhere reads the hash again (after this write).
                        pipe.xadd(
                            self.keys.presence, {"c": cid}, maxlen=NOTICES_KEPT, approximate=True
                        )
                for cid, _ in reads:
                    pipe.hgetall(self.keys.viewers(cid))
                results = await pipe.execute()
        except RedisError as exc:
            log.warning("presence_failed", error=repr(exc)[:200])
            self._dirty |= dirty  # written again next round
            self._noticed |= noticed
            return
        self.reads += len(reads)
        for cid, hub in writes:
            if not hub.local_viewers and self._viewing.get(cid) is hub:
                del self._viewing[cid]
        latest = now_ms + expiry_ms  # at the latest: a notice lost while Redis was away
        for (cid, hub), shares in zip(reads, results[len(results) - len(reads) :], strict=True):
            hub.publish_viewers(sum_viewers(shares, now_ms))
            first = first_expiry(shares, now_ms)
            self._read_at[cid] = (hub, latest if first is None else min(first, latest))
