"""One cluster node per process: ownership, the shared log, forwarded commands.

- **Leases.** A conversation is owned by the process holding ``lease`` (``SET NX PX``
  plus a fencing token, one Lua step); the node renews what it holds every third of
  ``CERO_LEASE_TTL`` (a Lua check-and-extend, one pipeline for all). A lease found lost
  (renewal or a refused append) stops the generation at once and turns the hub back
  into a mirror, re-read from the stream. A lease key that vanished while nobody else
  held the conversation (Redis restarted empty) is taken back with the same token
  (:mod:`cluster.scripts`), so a Redis restart does not stop running answers.
- **The log.** An owner's hub hands each event to :meth:`ClusterNode._sink`; one writer
  task sends everything pending as one pipeline (one fenced ``APPEND`` script per
  conversation), at most one pipeline in flight: a pipeline per event-loop turn, never a
  round trip per token. Stream ids are ``<seq>-0``, so a cursor is a stream position.
- **The relay.** One task, one connection: ``XREAD BLOCK`` over the streams of every
  mirror hub with subscribers (plus this node's wake stream, written when that set
  grows), feeding the hubs in order.
- **Commands.** ``send`` and ``cancel`` on a process that does not own the conversation
  go to the owner's command list (``RPUSH``); one task per node pops its command list and
  its reply list (``BLPOP``), runs commands on the local actor and answers the sender's
  reply list. No owner: the receiving process takes the lease.
- **Presence.** Each process keeps its viewer count per conversation in a Redis hash
  (field: its node id; refreshed every ttl, expiring after three), and the owner
  publishes the sum once a second when it changed: a dead process's viewers drop out
  within three ttls plus a second (31 s by default).
- **Owner death.** Taking a lease marks the conversation's ``streaming`` rows
  ``interrupted`` (fenced) and appends ``error``/``owner_lost`` for each; a watcher takes
  the lease of any watched log whose generation runs without an owner, so watchers on
  every process stop waiting within the ttl plus a second. The start-up sweep does the
  same for rows whose lease is gone, never a live neighbour's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from actors.clock import as_utc, utcnow
from actors.conversation import (
    ActorStopped,
    Cancel,
    ConversationActor,
    ConversationBusy,
    ModelSpec,
    ResumeAt,
    Send,
    SendResult,
    Subscribe,
)
from actors.dormant import Dormant
from actors.generation import StopReason
from actors.hub import Cursor, Event
from actors.presence import Presence
from actors.registry import ConversationNotFound, Registry
from actors.retries import RecentGenerations
from actors.store import ClientMessageTaken, StoredMessage, StoreUnavailable
from cluster import scripts
from cluster.keys import Keys
from cluster.mirror import ClusterHub
from server.tables import Message

log = structlog.get_logger(__name__)

#: Longest wait of a blocking read; the wake stream cuts it short when the set changes.
BLOCK_MS = 1000
#: Entries read per stream per round.
READ_COUNT = 1000


@dataclass(slots=True)
class Held:
    """A lease this process holds."""

    value: str
    fence: int
    hub: ClusterHub


@dataclass(slots=True)
class _Pending:
    hub: ClusterHub
    lease: str
    events: list[Event] = field(default_factory=list)


class ClusterNode:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        lease_ttl: float,
        log_ttl: float,
        resolve_model: Callable[[str], ModelSpec],
    ) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.node_id = secrets.token_urlsafe(12)
        self.lease_ttl = lease_ttl
        self.ttl_ms = max(1, int(lease_ttl * 1000))
        self.log_ttl_ms = int(log_ttl * 1000)
        self.forward_timeout = max(5.0, 2 * lease_ttl)
        self.resolve_model = resolve_model
        self.registry: Registry | None = None
        self.held: dict[str, Held] = {}
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._release = client.register_script(scripts.RELEASE)
        self._append = client.register_script(scripts.APPEND)
        self._close_log = client.register_script(scripts.CLOSE)
        #: One lock per conversation being claimed or recovered (gone when unused).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # the log writer
        self._pending: dict[str, _Pending] = {}
        self._releases: list[tuple[str, str]] = []
        self._write_wake = asyncio.Event()
        # the relay
        self._watched: dict[str, ClusterHub] = {}
        self._wake_id = b"0-0"
        self._wake_pending = False
        # presence: hubs whose local viewer count changed or must be refreshed
        self._viewing: dict[str, ClusterHub] = {}
        self._viewers_dirty: set[str] = set()
        # forwarded commands
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False
        # metrics
        self.forwarded = 0
        self.appended = 0
        self.pipelines = 0
        self.relayed = 0
        self.relay_reads = 0
        #: Seconds from the owner's append to this relay's read, of the last event read.
        self.relay_lag = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, registry: Registry) -> None:
        self.registry = registry
        loop = asyncio.get_running_loop()
        for coro, name in (
            (self._writer(), "cluster-writer"),
            (self._relay(), "cluster-relay"),
            (self._renewer(), "cluster-renewer"),
            (self._commands(), "cluster-commands"),
            (self._watcher(), "cluster-watcher"),
            (self._presence(), "cluster-presence"),
        ):
            self._loops.append(loop.create_task(coro, name=name))

    async def close(self) -> None:
        """After the registry closed: what the actors appended last is written, the
        leases are given back, the loops stop."""
        self._closing = True
        for cid, held in list(self.held.items()):
            held.hub.sink = None
            self._releases.append((cid, held.value))
        self.held.clear()
        self._write_wake.set()
        writer = self._loops[0] if self._loops else None
        if writer is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
        for task in self._loops + list(self._tasks):
            task.cancel()
        for task in self._loops + list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    def fence_of(self, conversation_id: str) -> int:
        held = self.held.get(conversation_id)
        return 0 if held is None else held.fence

    # -- the hooks of actors.cluster_hooks ----------------------------------------------

    async def attach(self, conversation_id: str) -> Dormant:
        hub = ClusterHub(
            conversation_id,
            epoch=None,
            on_subscribe=self._watch,
            on_presence=self._presence_changed,
            on_closed=self._closed_elsewhere,
        )
        await self.sync(hub)
        return Dormant(hub, Presence(hub), RecentGenerations())

    async def intercept(
        self, actor: ConversationActor, command: Send | Cancel | Subscribe | ResumeAt
    ) -> tuple[bool, object]:
        hub = cast(ClusterHub, actor.hub)
        if isinstance(command, Subscribe | ResumeAt):
            if hub.sink is None:
                await self.sync(hub)
            return False, None
        for _ in range(3):
            if await self.claim(actor):
                return False, None
            owner = await self.owner_of(actor.conversation_id)
            if owner is None:
                continue  # released meanwhile: try to take it
            if owner == self.node_id:
                await asyncio.sleep(0.05)  # our own lease being given back: retry
                continue
            if isinstance(command, Cancel):
                reply = await self.forward(
                    owner,
                    {
                        "kind": "cancel",
                        "conv": actor.conversation_id,
                        "user": actor.owner_id,
                        "gen": command.generation_id,
                    },
                )
                return True, bool(reply)
            return True, await self._forward_send(actor, hub, owner, command)
        raise StoreUnavailable("the conversation's owner could not be determined")

    def exited(self, actor: ConversationActor) -> None:
        cid = actor.conversation_id
        held = self.held.get(cid)
        if held is None or held.hub is not actor.hub:
            return
        generation = actor.generation
        if generation is not None and generation.task is not None and not generation.task.done():
            # A crashed actor's generation still stores and publishes its end under the
            # lease: give it back after that.
            def later(_task: object) -> None:
                if self.held.get(cid) is held:
                    self._give_back(cid)

            generation.task.add_done_callback(later)
            return
        self._give_back(cid)

    async def deleting(self, conversation_id: str) -> None:
        owner = await self.owner_of(conversation_id)
        if owner is not None and owner != self.node_id:
            with contextlib.suppress(StoreUnavailable, ConversationNotFound, ActorStopped):
                await self.forward(owner, {"kind": "delete", "conv": conversation_id})

    async def deleted(self, conversation_id: str) -> None:
        await self._close_log(
            keys=[self.keys.log(conversation_id), self.keys.epoch(conversation_id)],
            args=[int(self.forward_timeout * 1000) + 60_000],
        )

    def _closed_elsewhere(self, hub: ClusterHub) -> None:
        """A mirror read the delete marker: this process's actor and record go too."""
        registry = self.registry
        if registry is None:
            return

        async def stop() -> None:
            async with registry.deleting(hub.conversation_id, here_only=True):
                pass

        self._spawn(stop())

    # -- leases -------------------------------------------------------------------------

    async def owner_of(self, conversation_id: str) -> str | None:
        value = await self.redis.get(self.keys.lease(conversation_id))
        if value is None:
            return None
        return _text(value).rpartition(":")[0]

    async def _take(self, conversation_id: str) -> Held | None:
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
        return Held(f"{self.node_id}:{fence}", fence, cast(ClusterHub, None))

    async def claim(self, actor: ConversationActor) -> bool:
        """Own the conversation: ``True`` if this process holds (or just took) the lease."""
        cid = actor.conversation_id
        hub = cast(ClusterHub, actor.hub)
        held = self.held.get(cid)
        if held is not None and held.hub is hub and hub.sink is not None:
            return True
        async with self._lock(cid):
            held = self.held.get(cid)
            if held is not None and held.hub is hub and hub.sink is not None:
                return True
            taken = await self._take(cid)
            if taken is None:
                return False
            try:
                await self._become_owner(cid, hub, taken)
            except BaseException:
                self._give_back(cid, taken)
                raise
            actor.forget_history()
            return True

    async def _become_owner(self, cid: str, hub: ClusterHub, taken: Held) -> None:
        await self.redis.set(self.keys.epoch(cid), hub.epoch, nx=True, px=self.log_ttl_ms)
        await self.sync(hub)  # the log goes on where the last owner left it
        taken.hub = hub
        self.held[cid] = taken
        hub.lease = taken.value
        hub.sink = self._sink
        log.info("lease_taken", conversation_id=cid, fence=taken.fence, seq=hub.last_seq)
        # Whatever was generating under an earlier lease is over: its owner is gone.
        rows = (
            await Message.update(
                {
                    Message.status: "interrupted",
                    Message.fence: taken.fence,
                    Message.updated_at: utcnow(),
                }
            )
            .where((Message.conversation_id == cid) & (Message.status == "streaming"))
            .returning(Message.id, Message.generation_id)
            .run()
        )
        for row in rows:
            log.warning("owner_lost", conversation_id=cid, message_id=row["id"])
            hub.append(
                "error",
                {
                    "messageId": row["id"],
                    "generationId": row["generation_id"],
                    "code": "owner_lost",
                    "error": "The server generating this answer stopped",
                },
            )

    def _give_back(self, cid: str, held: Held | None = None) -> None:
        """Release after what was appended under the lease is written."""
        if held is None:
            held = self.held.pop(cid, None)
            if held is None:
                return
            held.hub.sink = None
            held.hub.lease = None
            self._follow(held.hub)
        self._releases.append((cid, held.value))
        self._write_wake.set()

    def _follow(self, hub: ClusterHub) -> None:
        """A hub that stops being the owner's: its subscribers follow the stream now."""
        if hub.subscriber_count and not hub.closed:
            self._watch(hub)

    def lost(self, cid: str, reason: str) -> None:
        """The lease is not ours any more: stop writing at once, follow the stream."""
        held = self.held.pop(cid, None)
        if held is None:
            return
        hub = held.hub
        hub.sink = None
        hub.lease = None
        self._follow(hub)
        log.warning("lease_lost", conversation_id=cid, fence=held.fence, reason=reason)
        pending = self._pending.pop(cid, None)
        del pending
        actor = self.registry.peek(cid) if self.registry is not None else None
        if actor is not None and actor.generation is not None:
            actor.generation.request_stop(StopReason.SHUTDOWN)
        self._spawn(self.sync(hub, hard=True))

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            held = list(self.held.items())
            if not held:
                continue
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
                continue
            for (cid, lease), result in zip(held, results, strict=True):
                if result == 2:
                    log.warning("lease_taken_back", conversation_id=cid, fence=lease.fence)
                elif result != 1 and self.held.get(cid) is lease:
                    self.lost(cid, f"renew refused: {result!r}"[:200])

    # -- the log writer -----------------------------------------------------------------

    def _sink(self, hub: ClusterHub, event: Event) -> None:
        cid = hub.conversation_id
        pending = self._pending.get(cid)
        lease = hub.lease or ""
        if pending is None or pending.lease != lease:
            if pending is not None:
                self._spawn(self._write_one(pending))  # an older lease's: written first
            pending = self._pending[cid] = _Pending(hub, lease)
        pending.events.append(event)
        self._write_wake.set()

    async def _write_one(self, pending: _Pending) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._queue_append(pipe, pending)
            await pipe.execute(raise_on_error=False)

    async def _queue_append(self, pipe: Any, pending: _Pending) -> None:
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
        await self._append(
            keys=[
                self.keys.lease(cid),
                self.keys.log(cid),
                self.keys.epoch(cid),
                self.keys.last(cid),
            ],
            args=args,
            client=pipe,
        )

    async def _writer(self) -> None:
        while True:
            if not self._pending and not self._releases:
                if self._closing:
                    return
                self._write_wake.clear()
                await self._write_wake.wait()
                continue
            batch = list(self._pending.values())
            releases = self._releases
            self._pending = {}
            self._releases = []
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for pending in batch:
                        await self._queue_append(pipe, pending)
                    for cid, value in releases:
                        await self._release(keys=[self.keys.lease(cid)], args=[value], client=pipe)
                    results = await pipe.execute(raise_on_error=False)
            except RedisError as exc:
                log.warning("log_append_failed", error=repr(exc)[:200], conversations=len(batch))
                continue
            self.pipelines += 1
            for pending, result in zip(batch, results, strict=False):
                self.appended += len(pending.events)
                if result == 2:
                    log.warning("lease_taken_back", conversation_id=pending.hub.conversation_id)
                elif result != 1:
                    cid = pending.hub.conversation_id
                    held = self.held.get(cid)
                    if held is not None and held.value == pending.lease:
                        self.lost(cid, f"append refused: {result!r}"[:200])

    # -- reading the log ----------------------------------------------------------------

    async def sync(self, hub: ClusterHub, *, hard: bool = False) -> None:
        """Bring a mirror up to the stream (also before the hub becomes the owner's)."""
        cid = hub.conversation_id
        epoch_raw = await self.redis.get(self.keys.epoch(cid))
        if epoch_raw is None:
            return  # no log in Redis (new, or expired): the hub's own epoch stands
        epoch = _text(epoch_raw)
        follows = epoch == hub.epoch and not hard
        start = f"{hub.last_seq + 1}-0" if follows else "-"
        entries: Any = await self.redis.xrange(self.keys.log(cid), min=start, max="+")
        parsed = [(_seq(entry_id), _data(fields)) for entry_id, fields in entries]
        if not follows or (parsed and parsed[0][0] != hub.last_seq + 1):
            if not parsed:
                tail: Any = await self.redis.xrevrange(self.keys.log(cid), count=1)
                last = _seq(tail[0][0]) if tail else 0
                hub.rebase(epoch, last)
                return
            hub.rebase(epoch, parsed[0][0] - 1)
        for seq, data in parsed:
            if not hub.feed(seq, data):
                hub.rebase(epoch, seq - 1)
                hub.feed(seq, data)

    def _watch(self, hub: ClusterHub) -> None:
        """A mirror got a subscriber: the relay reads its stream from now on."""
        cid = hub.conversation_id
        if self._watched.get(cid) is hub:
            return
        self._watched[cid] = hub
        if not self._wake_pending:
            self._wake_pending = True
            self._spawn(self._wake_relay())

    async def _wake_relay(self) -> None:
        self._wake_pending = False
        with contextlib.suppress(RedisError):
            await self.redis.xadd(self.keys.wake(self.node_id), {"w": 1}, maxlen=1)

    async def _relay(self) -> None:
        wake_key = self.keys.wake(self.node_id)
        while True:
            for cid, hub in list(self._watched.items()):
                if hub.sink is not None or hub.closed or hub.subscriber_count == 0:
                    del self._watched[cid]
            streams: dict[Any, Any] = {
                self.keys.log(cid): f"{hub.last_seq}-0" for cid, hub in self._watched.items()
            }
            streams[wake_key] = self._wake_id
            try:
                answer: Any = await self.redis.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                self.relay_reads += 1
            except RedisError as exc:
                log.warning("relay_read_failed", error=repr(exc)[:200])
                await asyncio.sleep(0.5)
                continue
            for key_raw, entries in answer or []:
                key = _text(key_raw)
                if key == wake_key:
                    self._wake_id = entries[-1][0]
                    continue
                watched = self._watched.get(self.keys.conversation_of_log(key))
                if watched is None:
                    continue
                for entry_id, fields in entries:
                    if not watched.feed(_seq(entry_id), _data(fields)):
                        self._spawn(self.sync(watched))
                        break
                self.relayed += len(entries)
                sent = entries[-1][1].get(b"t")
                if sent is not None:
                    self.relay_lag = max(0.0, time.time() - int(sent) / 1000)

    # -- presence -----------------------------------------------------------------------

    def _presence_changed(self, hub: ClusterHub) -> None:
        self._viewing[hub.conversation_id] = hub
        self._viewers_dirty.add(hub.conversation_id)

    async def _presence(self) -> None:
        """Once a second: write this process's changed viewer counts (all of them every
        ttl), then let each owned conversation publish the cluster-wide sum."""
        expiry_ms = int(self.lease_ttl * 3000)
        refresh_every = max(1, int(self.lease_ttl))
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            refresh = rounds % refresh_every == 0
            now_ms = int(time.time() * 1000)
            writes = [
                (cid, hub)
                for cid, hub in list(self._viewing.items())
                if refresh or cid in self._viewers_dirty
            ]
            self._viewers_dirty.clear()
            owned = [(cid, held.hub) for cid, held in self.held.items()]
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
                hub.publish_viewers(_sum_viewers(shares, now_ms))

    # -- owner death --------------------------------------------------------------------

    async def _watcher(self) -> None:
        """A watched log whose generation runs without a lease: its owner died."""
        interval = min(1.0, self.lease_ttl / 4)
        while True:
            await asyncio.sleep(interval)
            orphans = [
                (cid, hub)
                for cid, hub in list(self._watched.items())
                if hub.running is not None and hub.sink is None and not hub.closed
            ]
            if not orphans:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for cid, _ in orphans:
                        pipe.exists(self.keys.lease(cid))
                    exists = await pipe.execute()
            except RedisError:
                continue
            for (cid, hub), there in zip(orphans, exists, strict=True):
                if not there:
                    self._spawn(self.recover(cid, hub))

    async def recover(self, cid: str, hub: ClusterHub) -> bool:
        """Take a free lease just to close what its dead owner left, then give it back."""
        async with self._lock(cid):
            if cid in self.held:
                return False
            taken = await self._take(cid)
            if taken is None:
                return False
            try:
                await self._become_owner(cid, hub, taken)
            finally:
                if cid in self.held:
                    self._give_back(cid)
                else:
                    self._give_back(cid, taken)
            return True

    async def sweep(self) -> int:
        """Start-up: conversations with ``streaming`` rows and no lease were left by a
        process that died; close them (a live neighbour's rows have a lease)."""
        rows = (
            await Message.select(Message.conversation_id)
            .where(Message.status == "streaming")
            .distinct()
            .run()
        )
        return await self._sweep([str(row["conversation_id"]) for row in rows], again=True)

    async def _sweep(self, conversations: list[str], *, again: bool) -> int:
        done = 0
        leased: list[str] = []
        for cid in conversations:
            if await self.redis.exists(self.keys.lease(cid)):
                leased.append(cid)
                continue
            record = await self.attach(cid)
            hub = cast(ClusterHub, record.hub)
            if await self.recover(cid, hub):
                done += 1
        if leased and again:
            # A lease may be a dead process's that has not expired yet: look once more
            # when it would have (a live owner renews it, and is left alone again).
            async def later() -> None:
                await asyncio.sleep(self.lease_ttl + 1.0)
                swept = await self._sweep(leased, again=False)
                if swept:
                    log.warning("interrupted_conversations_recovered", count=swept)

            self._spawn(later())
        return done

    # -- forwarded commands -------------------------------------------------------------

    async def forward(self, owner: str, command: dict[str, Any]) -> Any:
        rid = secrets.token_urlsafe(12)
        command["id"] = rid
        command["from"] = self.node_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self.forwarded += 1
        key = self.keys.commands(owner)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, orjson.dumps(command))
                pipe.pexpire(key, int(self.forward_timeout * 1000))
                await pipe.execute()
            async with asyncio.timeout(self.forward_timeout):
                reply = await future
        except TimeoutError:
            raise StoreUnavailable("the conversation's owner did not answer") from None
        finally:
            self._waiting.pop(rid, None)
        error = reply.get("error")
        if error == "busy":
            raise ConversationBusy(command["conv"])
        if error == "not_found":
            raise ConversationNotFound(command["conv"])
        if error == "stopped":
            raise ActorStopped(command["conv"])
        if error == "client_taken":
            raise ClientMessageTaken(str(command.get("cmid")))
        if error is not None:
            raise StoreUnavailable(f"the conversation's owner failed: {error}")
        return reply.get("ok")

    async def _forward_send(
        self, actor: ConversationActor, hub: ClusterHub, owner: str, command: Send
    ) -> SendResult:
        reply = await self.forward(
            owner,
            {
                "kind": "send",
                "conv": actor.conversation_id,
                "user": actor.owner_id,
                "message": command.message,
                "model": command.model.id,
                "tools": list(command.tools),
                "cmid": command.client_message_id,
            },
        )
        answer = _message(reply["answer"]) if reply.get("answer") else None
        result = SendResult(
            conversation_id=actor.conversation_id,
            generation_id=reply["generationId"],
            user_message=_message(reply["user"]),
            assistant_message_id=reply.get("assistantId"),
            model=reply["model"],
            answer=answer,
            retried=bool(reply.get("retried")),
            actor=actor,
            seq_before=reply.get("seqBefore"),
        )
        spec = command.subscribe
        if spec is not None and answer is None:
            seq_before = result.seq_before
            if seq_before is not None and (
                hub.epoch != reply.get("epoch") or hub.last_seq < seq_before
            ):
                await self.sync(hub)
            cursor = None
            if (
                seq_before is not None
                and hub.epoch == reply.get("epoch")
                and hub.last_seq >= seq_before
            ):
                cursor = Cursor(hub.epoch, seq_before)
            result.subscription = actor.subscribe_now(cursor, spec)
        return result

    async def _commands(self) -> None:
        keys = [self.keys.commands(self.node_id), self.keys.replies(self.node_id)]
        while True:
            try:
                popped: Any = await self.redis.blpop(keys, timeout=1)
            except RedisError as exc:
                log.warning("command_read_failed", error=repr(exc)[:200])
                await asyncio.sleep(0.5)
                continue
            if popped is None:
                continue
            key_raw, raw = popped
            message = orjson.loads(raw)
            if _text(key_raw) == keys[1]:
                future = self._waiting.get(message.get("id", ""))
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self._spawn(self._run_command(message))

    async def _run_command(self, command: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": command.get("id")}
        try:
            reply["ok"] = await self._execute(command)
        except ConversationBusy:
            reply["error"] = "busy"
        except ConversationNotFound:
            reply["error"] = "not_found"
        except ActorStopped:
            reply["error"] = "stopped"
        except ClientMessageTaken:
            reply["error"] = "client_taken"
        except Exception as exc:
            log.warning("forwarded_command_failed", error=repr(exc)[:200])
            reply["error"] = type(exc).__name__
        key = self.keys.replies(str(command.get("from")))
        with contextlib.suppress(RedisError):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, orjson.dumps(reply))
                pipe.pexpire(key, int(self.forward_timeout * 1000))
                await pipe.execute()

    async def _execute(self, command: dict[str, Any]) -> Any:
        assert self.registry is not None
        cid = str(command["conv"])
        user = str(command.get("user"))
        if command["kind"] == "delete":
            async with self.registry.deleting(cid, here_only=True):
                return True
        actor = await self.registry.get_or_spawn(cid, user)
        if command["kind"] == "cancel":
            return await actor.cancel(command.get("gen"))
        result = await actor.send(
            str(command["message"]),
            model=self.resolve_model(str(command["model"])),
            tools=tuple(command.get("tools") or ()),
            client_message_id=command.get("cmid"),
        )
        return {
            "generationId": result.generation_id,
            "user": _message_json(result.user_message),
            "assistantId": result.assistant_message_id,
            "model": result.model,
            "answer": None if result.answer is None else _message_json(result.answer),
            "retried": result.retried,
            "seqBefore": result.seq_before,
            "epoch": result.actor.hub.epoch if result.actor is not None else None,
        }


def _sum_viewers(shares: Any, now_ms: int) -> int:
    total = 0
    for raw in (shares or {}).values():
        count, _, expires = _text(raw).partition(":")
        if expires.isdigit() and int(expires) > now_ms and count.isdigit():
            total += int(count)
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seq(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def _data(fields: Any) -> dict[str, object]:
    raw = fields.get(b"d") if isinstance(fields, dict) else None
    if raw is None:
        return {}
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else {}


def _message_json(m: StoredMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "created_at": as_utc(m.created_at).isoformat(),
        "model": m.model,
        "generation_id": m.generation_id,
        "client_message_id": m.client_message_id,
        "finish_reason": m.finish_reason,
        "usage": m.usage,
        "citations": m.citations,
        "tools": m.tools,
    }


def _message(data: dict[str, Any]) -> StoredMessage:
    from datetime import datetime

    return StoredMessage(
        id=data["id"],
        conversation_id=data["conversation_id"],
        role=data["role"],
        content=data["content"],
        status=data["status"],
        created_at=datetime.fromisoformat(data["created_at"]),
        model=data.get("model"),
        generation_id=data.get("generation_id"),
        client_message_id=data.get("client_message_id"),
        finish_reason=data.get("finish_reason"),
        usage=data.get("usage"),
        citations=data.get("citations"),
        tools=data.get("tools"),
    )


__all__ = ["ClusterNode", "Held"]
