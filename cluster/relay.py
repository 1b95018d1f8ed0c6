"""The relay: this process's mirrors of conversations owned elsewhere, fed from Redis.

One task, one connection: ``XREAD BLOCK`` over the streams of every mirror hub with
subscribers (plus this node's wake stream, written when that set grows, and the epoch
notices), feeding the hubs in order. :meth:`Relay.sync` reads a stream from where a hub is
(``XRANGE``): before a subscribe, before a hub becomes the owner's, when the relay finds a
gap, and when a notice says a watched log started again in another epoch.

Epoch notices (``Keys.epochs``, written by whoever starts a log in an epoch of its own,
:data:`cluster.scripts.ACQUIRE`): a log that expired or was lost with a Redis that
restarted empty, taken over by a process without the conversation in memory, starts again
at seq 1 -- below where its mirrors are, so the read after their seq would not see it. The
notice stream is one more stream in the same blocking read (no round trip of its own); a
notice for a watched mirror in another epoch syncs it (a ``reset``, then the new events).
Reading on after the last notice read also finds a stream that a Redis restarted empty
began again: its ids come from Redis's clock, so they are above the old ones unless that
clock went back. As a second guard the relay reads the notices from the start of the
stream when it starts and after every failed read (a restart the client's own reconnect
retries hid is covered by the clock alone); what it reads again costs nothing but one sync
of a watched mirror whose epoch differs from a notice's, once per notice (never a loop).

Redis not answering: every read goes on from where each hub is (its ``last_seq``), so the
mirrors catch up, in order, with what the owner appended meanwhile (the log writer sends
it again until Redis takes it). A sync the relay starts by itself (:meth:`Relay.resync`)
is tried again, with a growing pause, until it gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from cluster.faults import REDIS_FAULTS
from cluster.keys import NodeContext
from cluster.mirror import ClusterEventLog
from cluster.wire import event_data, seq_of, text

log = structlog.get_logger(__name__)

#: Longest wait of a blocking read; the wake stream cuts it short when the set changes.
BLOCK_MS = 1000
#: Entries read per stream per round.
READ_COUNT = 1000
#: The pause after a failed read or sync; doubled per failure up to the max.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.5


class Relay:
    def __init__(
        self,
        ctx: NodeContext,
    ) -> None:
        self.redis, self.keys, self.node_id = ctx.redis, ctx.keys, ctx.node_id
        self._spawn = ctx.spawn
        #: Mirrors with local subscribers, whose streams the relay reads.
        self.watched: dict[str, ClusterEventLog] = {}
        #: Mirrors a :meth:`resync` is bringing up to the stream (not read meanwhile).
        self._syncing: set[str] = set()
        #: Of those, the ones to read again from the start once that sync is done.
        self._hard: set[str] = set()
        #: Of those, the ones a notice named meanwhile: synced once more after it.
        self._noticed: set[str] = set()
        self._wake_id = b"0-0"
        #: The last epoch notice read (from the start again after a failed read).
        self._notice_id: Any = b"0-0"
        self._wake_pending = False
        self.relayed = 0
        self.reads = 0
        #: Seconds from the owner's append to this relay's read, of the last event read.
        self.lag = 0.0
        #: Metrics hook: ``lag`` of each stream's batch read (one call per stream per read).
        self.on_lag: Callable[[float], None] | None = None

    async def sync(self, hub: ClusterEventLog, *, hard: bool = False) -> None:
        """Bring a mirror up to the stream: one round trip (:meth:`queue_reads`), two
        when the log turned out to have another epoch."""
        async with self.redis.pipeline(transaction=False) as pipe:
            start = self.queue_reads(pipe, hub, hard=hard)
            answers = await pipe.execute()
        await self.apply(hub, start, answers, hard=hard)

    def queue_reads(self, pipe: Any, hub: ClusterEventLog, *, hard: bool = False) -> str:
        """What :meth:`apply` needs, on ``pipe`` (three answers): the log's epoch, its
        entries from where the hub is (from the start when the hub is new or ``hard``),
        and its last entry. Returns where the read starts."""
        cid = hub.conversation_id
        start = "-" if hard or hub.last_seq == 0 else f"{hub.last_seq + 1}-0"
        pipe.get(self.keys.epoch(cid))
        pipe.xrange(self.keys.log(cid), min=start, max="+")
        pipe.xrevrange(self.keys.log(cid), count=1)
        return start

    async def apply(
        self, hub: ClusterEventLog, start: str, answers: list[Any], *, hard: bool = False
    ) -> None:
        """Feed the hub what :meth:`queue_reads` read (also before the hub becomes the
        owner's): the events that follow, or a ``rebase`` when they do not."""
        epoch_raw, entries, tail = answers
        if epoch_raw is None:
            return  # no log in Redis (new, or expired): the hub's own epoch stands
        epoch = text(epoch_raw)
        follows = epoch == hub.epoch and not hard
        if not follows and start != "-":
            entries = await self.redis.xrange(self.keys.log(hub.conversation_id), min="-", max="+")
        parsed = [(seq_of(entry_id), event_data(fields)) for entry_id, fields in entries]
        if follows:
            parsed = [(seq, data) for seq, data in parsed if seq > hub.last_seq]
        if not follows or (parsed and parsed[0][0] != hub.last_seq + 1):
            if not parsed:
                last = seq_of(tail[0][0]) if tail else 0
                hub.rebase(epoch, last)
                return
            hub.rebase(epoch, parsed[0][0] - 1)
        for seq, data in parsed:
            if not hub.feed(seq, data):
                hub.rebase(epoch, seq - 1)
                hub.feed(seq, data)

    async def resync(self, hub: ClusterEventLog, *, hard: bool = False) -> None:
        """:meth:`sync` in a task of its own: tried again until Redis answers (what Redis
        lost, the sync turns into a ``reset``), then the relay reads the hub's stream again."""
        cid = hub.conversation_id
        if cid in self._syncing:
            if hard:
                self._hard.add(cid)  # after the one under way
            return
        self._syncing.add(cid)
        pause = RETRY_FIRST_S
        try:
            while not hub.closed and hub.sink is None:
                try:
                    self._noticed.discard(cid)  # this sync reads what they announced
                    await self.sync(hub, hard=hard)
                    if cid in self._hard:
                        self._hard.discard(cid)
                        hard = True
                        continue
                    if cid in self._noticed:
                        hard = False  # a notice came meanwhile: the read may predate it
                        continue
                    return
                except REDIS_FAULTS as exc:
                    log.warning(
                        "relay_sync_failed",
                        conversation_id=cid,
                        error=repr(exc)[:200],
                        retry_in=pause,
                    )
                await asyncio.sleep(pause)  # Redis is not answering: the retry's pace
                pause = min(pause * 2, RETRY_MAX_S)
        finally:
            self._syncing.discard(cid)
            self._hard.discard(cid)
            self._noticed.discard(cid)
            self._wake_soon()

    def noticed(self, entries: list[Any]) -> None:
        """Epoch notices read: each watched mirror in another epoch than its log's latest
        notice is synced (:meth:`resync`; once more if one is under way)."""
        latest = {text(fields.get(b"c", b"")): text(fields.get(b"e", b"")) for _, fields in entries}
        for cid, epoch in latest.items():
            hub = self.watched.get(cid)
            if hub is None or hub.sink is not None or hub.closed or hub.epoch == epoch:
                continue
            log.info("relay_epoch_notice", conversation_id=cid, epoch=epoch, was=hub.epoch)
            self._noticed.add(cid)
            self._spawn(self.resync(hub))

    def watch(self, hub: ClusterEventLog) -> None:
        """A mirror got a subscriber: the relay reads its stream from now on."""
        cid = hub.conversation_id
        if self.watched.get(cid) is hub:
            return
        self.watched[cid] = hub
        self._wake_soon()

    def _wake_soon(self) -> None:
        """Cut the blocking read short: the set of streams to read changed."""
        if not self._wake_pending:
            self._wake_pending = True
            self._spawn(self._wake())

    async def _wake(self) -> None:
        self._wake_pending = False
        with contextlib.suppress(*REDIS_FAULTS):
            await self.redis.xadd(self.keys.wake(self.node_id), {"w": 1}, maxlen=1)

    async def run(self) -> None:
        wake_key = self.keys.wake(self.node_id)
        notices_key = self.keys.epochs
        pause = RETRY_FIRST_S
        while True:
            for cid, hub in list(self.watched.items()):
                if hub.sink is not None or hub.closed or hub.subscriber_count == 0:
                    del self.watched[cid]
            # Each stream from where its hub is: after a failed read, what was missed.
            streams: dict[Any, Any] = {
                self.keys.log(cid): f"{hub.last_seq}-0"
                for cid, hub in self.watched.items()
                if cid not in self._syncing
            }
            streams[wake_key] = self._wake_id
            streams[notices_key] = self._notice_id
            try:
                answer: Any = await self.redis.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                self.reads += 1
            except REDIS_FAULTS as exc:
                log.warning("relay_read_failed", error=repr(exc)[:200], retry_in=pause)
                self._notice_id = b"0-0"  # Redis may come back empty: every notice again
                await asyncio.sleep(pause)  # Redis is not answering: the retry's pace
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            pause = RETRY_FIRST_S
            for key_raw, entries in answer or []:
                key = text(key_raw)
                if key == wake_key:
                    self._wake_id = entries[-1][0]
                    continue
                if key == notices_key:
                    self._notice_id = entries[-1][0]
                    self.noticed(entries)
                    continue
                watched = self.watched.get(self.keys.conversation_of_log(key))
                if watched is None or watched.conversation_id in self._syncing:
                    continue
                for entry_id, fields in entries:
                    if not watched.feed(seq_of(entry_id), event_data(fields)):
                        self._spawn(self.resync(watched))
                        break
                self.relayed += len(entries)
                sent = entries[-1][1].get(b"t")
                if sent is not None:
                    self.lag = max(0.0, time.time() - int(sent) / 1000)
                    if self.on_lag is not None:
                        self.on_lag(self.lag)
