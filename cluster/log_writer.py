"""The log appender: an owner's events to the conversation's Redis stream, fenced.

An owner's hub hands each event to :meth:`LogWriter.sink`; one writer task sends
everything pending as one pipeline (one fenced ``APPEND`` script per conversation, then
the lease releases queued meanwhile, so a lease is given back only after what was
appended under it), at most one pipeline in flight: one round trip per event-loop turn
for every conversation this process owns, never a round trip per token (the scripts go
as bare ``EVALSHA``, :mod:`cluster.lua`: no ``SCRIPT EXISTS`` round trip per pipeline).
An append the script refuses (the lease is someone else's) is reported to ``refused``,
which stops the owner.

Redis not answering loses nothing: a round that failed is put back in front of what came
meanwhile and sent again, with a growing pause (:data:`RETRY_FIRST_S` to
:data:`RETRY_MAX_S`), until Redis takes it -- in order, so the stream ends up holding
every event and the mirrors catch up without a gap. The script skips what the log already
holds, since a round that timed out may have been applied after all. A Redis that came
back empty gets the owner's replay buffer again first (:meth:`LogWriter._refill`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from actors.api import Event
from cluster import scripts
from cluster.faults import REDIS_FAULTS
from cluster.keys import NodeContext
from cluster.lua import Lua, raise_unloaded
from cluster.mirror import ClusterEventLog
from cluster.wire import seq_of

log = structlog.get_logger(__name__)

#: The pause before sending a failed round again; doubled per failure up to the max.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.5
#: Events kept per conversation while Redis does not take them (minutes of a fast answer);
#: past it the oldest half is dropped, so a long outage cannot grow the process.
MAX_PENDING = 20_000


@dataclass(slots=True)
class _Pending:
    hub: ClusterEventLog
    lease: str
    events: list[Event] = field(default_factory=list)
    #: The lease was lost while this was being sent: never sent again.
    dropped: bool = False


class LogWriter:
    def __init__(
        self,
        ctx: NodeContext,
        *,
        ttl_ms: int,
        log_ttl_ms: int,
        refused: Callable[[str, str, str], None],
    ) -> None:
        self.redis, self.keys, self._spawn = ctx.redis, ctx.keys, ctx.spawn
        client = ctx.redis
        self.ttl_ms, self.log_ttl_ms = ttl_ms, log_ttl_ms
        self._refused = refused  # (conversation id, lease value, reason)
        self._append = Lua(client, scripts.APPEND)
        self._release = Lua(client, scripts.RELEASE)
        self._pending: dict[str, _Pending] = {}
        self._releases: list[tuple[str, str]] = []
        #: The round being sent (put back if it fails).
        self._sending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.appended = 0
        self.pipelines = 0

    def sink(self, hub: ClusterEventLog, event: Event) -> None:
        cid = hub.conversation_id
        pending = self._pending.get(cid)
        lease = hub.lease or ""
        if pending is None or pending.lease != lease:
            if pending is not None:
                self._spawn(self._write_one(pending))  # an older lease's: written first
            pending = self._pending[cid] = _Pending(hub, lease)
        events = pending.events
        events.append(event)
        if len(events) > MAX_PENDING:
            # Redis has been away for long: the oldest half goes (mirrors get ``reset``).
            log.warning("log_pending_dropped", conversation_id=cid, events=MAX_PENDING // 2)
            del events[: MAX_PENDING // 2]
        self._wake.set()

    def release(self, conversation_id: str, lease: str) -> None:
        """Give the lease back after what is pending is written."""
        self._releases.append((conversation_id, lease))
        self._wake.set()

    def drop(self, conversation_id: str) -> None:
        """The lease is lost: what was pending under it is not written (nor sent again)."""
        self._pending.pop(conversation_id, None)
        for pending in self._sending:
            if pending.hub.conversation_id == conversation_id:
                pending.dropped = True

    def close(self) -> None:
        """Write what is pending, then :meth:`run` returns."""
        self._closing = True
        self._wake.set()

    async def _write_one(self, pending: _Pending) -> None:
        """An older lease's last events, sent once (that lease is on its way out)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                self._queue_append(pipe, pending)
                results = await pipe.execute(raise_on_error=False)
            await raise_unloaded(results, (self._append, self._release))
        except REDIS_FAULTS as exc:
            log.warning(
                "log_append_failed",
                error=repr(exc)[:200],
                conversation_id=pending.hub.conversation_id,
            )

    def _queue_append(self, pipe: Any, pending: _Pending) -> None:
        hub = pending.hub
        cid = hub.conversation_id
        fence = pending.lease.rpartition(":")[2]
        args: list[Any] = [
            pending.lease,
            hub.epoch,
            f"{hub.floor}-0",
            self.log_ttl_ms,
            self.ttl_ms,
            fence,
        ]
        for event in pending.events:
            args.append(event.seq)
            args.append(event.json)
        args.append(int(time.time() * 1000))
        self._append.queue(
            pipe,
            [self.keys.lease(cid), self.keys.log(cid), self.keys.epoch(cid), self.keys.last(cid)],
            args,
        )

    async def _refill(self, batch: list[_Pending]) -> None:
        """After a failed round: a log that lost its tail (Redis restarted empty) gets it
        again from the owner's replay buffer, ahead of the round, so the mirrors go on
        from where they were instead of resetting. One ``XREVRANGE`` per conversation;
        nobody else appends meanwhile (the lease is ours)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pending in batch:
                pipe.xrevrange(self.keys.log(pending.hub.conversation_id), count=1)
            tails: list[Any] = await pipe.execute()
        for pending, tail in zip(batch, tails, strict=True):
            if not pending.events:
                continue
            top = seq_of(tail[0][0]) if tail else 0
            first = pending.events[0].seq
            if top < first - 1:
                missing = [e for e in pending.hub.held() if top < e.seq < first]
                pending.events[:0] = missing
                log.warning(
                    "log_refilled",
                    conversation_id=pending.hub.conversation_id,
                    events=len(missing),
                    log_had=top,
                )

    def _put_back(self, batch: list[_Pending], releases: list[tuple[str, str]]) -> None:
        """A round failed: it goes in front of what was handed over meanwhile."""
        for pending in batch:
            if pending.dropped:
                continue
            cid = pending.hub.conversation_id
            later = self._pending.get(cid)
            if later is not None and later.lease != pending.lease:
                # Another lease's events came meanwhile: this one's go first, on their own.
                self._spawn(self._write_one(pending))
                continue
            if later is not None:
                pending.events.extend(later.events)
            self._pending[cid] = pending
        self._releases = releases + self._releases

    async def run(self) -> None:
        pause = RETRY_FIRST_S
        failed = False  # the last round did not get through
        while True:
            if not self._pending and not self._releases:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._sending = list(self._pending.values())
            releases = self._releases
            self._pending = {}
            self._releases = []
            try:
                if failed:
                    await self._refill(batch)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for pending in batch:
                        self._queue_append(pipe, pending)
                    for cid, value in releases:
                        self._release.queue(pipe, [self.keys.lease(cid)], [value])
                    results = await pipe.execute(raise_on_error=False)
                await raise_unloaded(results, (self._append, self._release))
            except REDIS_FAULTS as exc:
                self._sending = []
                log.warning(
                    "log_append_failed",
                    error=repr(exc)[:200],
                    conversations=len(batch),
                    retry_in=pause,
                )
                self._put_back(batch, releases)
                failed = True
                await asyncio.sleep(pause)  # Redis is not answering: the retry's pace
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            self._sending = []
            failed = False
            pause = RETRY_FIRST_S
            self.pipelines += 1
            for pending, result in zip(batch, results, strict=False):
                self.appended += len(pending.events)
                cid = pending.hub.conversation_id
                if result == 2:
                    log.warning("lease_taken_back", conversation_id=cid)
                elif result != 1:
                    self._refused(cid, pending.lease, f"append refused: {result!r}"[:200])
