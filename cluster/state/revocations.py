"""Session revocations in Redis: a revoked or signed-out session gets a key
``revoked:<id>`` living as long as a cookie cache entry (:data:`state.revocations.
CACHE_TTL_S`), checked on every cookie-cache hit, and is published on ``revocations`` so
every process ends that session's sockets and streams at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from cluster.faults import REDIS_FAULTS
from cluster.state.shared import RedisShared
from state.revocations import CACHE_TTL_S

log = structlog.get_logger(__name__)

#: Before re-subscribing to revocations after Redis failed.
RESUBSCRIBE_S = 1.0
_MAX_UNPUBLISHED = 100_000


class RedisRevocations:
    """:class:`state.revocations.Revocations` for every process of a cluster."""

    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared
        self.client = shared.client
        self.health = shared.health
        self.channel = shared.key("revocations")
        # Revocations Redis did not take (it was down): published again when it returns.
        self._unpublished: dict[str, float] = {}

    async def publish(self, session_id: str) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self._shared.key("revoked", session_id), 1, ex=CACHE_TTL_S)
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
            return bool(await self.client.exists(self._shared.key("revoked", session_id)))
        except REDIS_FAULTS as exc:
            self.health.failed("revoked", exc)
            return True

    async def _republish(self) -> None:
        now = time.monotonic()
        pending = {s: t for s, t in self._unpublished.items() if now - t < CACHE_TTL_S}
        self._unpublished = {}
        for session_id in pending:
            await self.publish(session_id)

    async def listen(self, on_revoked: Callable[[str], None]) -> None:
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
                            on_revoked(data.decode("ascii", "replace"))
            except REDIS_FAULTS as exc:
                self.health.failed("revocations_subscribe", exc)
            await asyncio.sleep(RESUBSCRIBE_S)
