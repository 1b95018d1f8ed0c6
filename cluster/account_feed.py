"""Cluster mode's account channel: each user's account log lives in Redis, and every
process mirrors the logs its devices read (docs/api.md, Account channel).

Writing. Any process publishes (a rename through A, an answer ending on B): one script
takes the user's next seq (``INCR``), appends the event to the user's stream (entry id
``<seq>-0``, trimmed to about :data:`~actors.account_feed.BUFFER_EVENTS`), refreshes the
keys' lifetime and ``PUBLISH``-es ``<user id>\\n<epoch>\\n<seq>\\n<event JSON>`` on one
channel for the whole cluster. Redis runs scripts one at a time, so the order of the
messages is the order of the seqs.

Reading. A process keeps a local :class:`~actors.event_log.EventLog` per user whose
devices it serves (:class:`~actors.account_feed.AccountFeeds`' logs), fed by one listener
task from the channel; the process's own events come back the same way. Before a log's
first subscription it is filled from the stream (its epoch and the events the stream
still holds), so a device resumes its cursor on any process. A message that does not
follow (one lost while the listener reconnected) or of another epoch makes the process
read the stream again from where its log is; what the stream no longer holds becomes a
``reset`` for the log's subscribers, as in one process.

Epoch: ``account:<user>:epoch``, made by the first write or read (``SET`` when missing).
A Redis that lost the keys (restarted empty, or a user idle past :data:`TTL_S`) starts a
new epoch, and cursors from before get ``reset``. A publish while Redis is down fails (the
channel logs the dropped event); the change itself is in the database, and devices
refetch on their next ``reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import orjson
import redis.asyncio as redis
import structlog

from actors.api import AccountFeeds, EventLog, SubscribeSpec, Subscription
from cluster.faults import REDIS_FAULTS
from cluster.state.connection import RedisHealth

log = structlog.get_logger(__name__)

#: A user's keys live this long after their last event (seconds).
TTL_S = 7 * 24 * 3600
#: Before subscribing to the channel again after Redis failed.
RESUBSCRIBE_S = 1.0
#: How long a subscribe waits for the listener at start-up (then reads the stream anyway).
READY_WAIT_S = 1.0

# KEYS: epoch, seq, stream. ARGV: a new epoch, the event JSON, stream length, ttl, channel,
# user id. A missing epoch or seq starts a new epoch (the stream goes with the old one).
_PUBLISH = """
local epoch = redis.call('GET', KEYS[1])
if (not epoch) or redis.call('EXISTS', KEYS[2]) == 0 then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'd', ARGV[2])
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('PUBLISH', ARGV[5], ARGV[6] .. '\\n' .. epoch .. '\\n' .. seq .. '\\n' .. ARGV[2])
return {epoch, seq}
"""

# KEYS: epoch, seq, stream. ARGV: a new epoch, the first seq wanted (0: the last
# ARGV[3] events), stream length, ttl, the epoch the reader is in (another: the last
# ARGV[3] events). Returns {epoch, last seq, entries from there}.
_READ = """
local epoch = redis.call('GET', KEYS[1])
if (not epoch) or redis.call('EXISTS', KEYS[2]) == 0 then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch, 'EX', tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], 0, 'EX', tonumber(ARGV[4]))
  redis.call('DEL', KEYS[3])
end
local seq = tonumber(redis.call('GET', KEYS[2]))
local from = tonumber(ARGV[2])
if epoch ~= ARGV[5] or from < 1 then
  from = seq - tonumber(ARGV[3]) + 1
end
if from < 1 then
  from = 1
end
return {epoch, seq, redis.call('XRANGE', KEYS[3], from .. '-0', '+')}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterAccountFeeds(AccountFeeds):
    """:class:`AccountFeeds` whose logs are Redis's, mirrored here."""

    def __init__(self, client: redis.Redis, health: RedisHealth, prefix: str) -> None:
        super().__init__()
        self.client = client
        self.health = health
        self.prefix = prefix
        self.channel = f"{prefix}account"
        self._publish = client.register_script(_PUBLISH)
        self._read = client.register_script(_READ)
        #: Users whose local log is being read from the stream: what arrives meanwhile.
        self._held: dict[str, list[tuple[str, int, bytes]]] = {}
        #: Users whose local log may have missed messages (read again before use).
        self._stale: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        #: Set once the listener is subscribed (a read of the stream is safe from then).
        self._ready = asyncio.Event()
        self._syncs: set[asyncio.Task[None]] = set()
        self.received = 0
        #: Times subscribers got ``reset`` because the stream no longer held their events.
        self.resets = 0

    def _keys(self, user_id: str) -> list[str]:
        base = f"{self.prefix}account:{user_id}:"
        return [base + "epoch", base + "seq", base + "log"]

    # -- writing -------------------------------------------------------------------------

    def wanted(self, user_id: str) -> bool:
        return True  # a device of the user may follow on another process

    async def publish(self, user_id: str, type: str, fields: dict[str, object]) -> None:
        payload = orjson.dumps({"type": type, **fields})
        try:
            await self._publish(
                keys=self._keys(user_id),
                args=[
                    secrets.token_urlsafe(12),
                    payload,
                    self.buffer_events,
                    TTL_S,
                    self.channel,
                    user_id,
                ],
            )
        except REDIS_FAULTS as exc:
            self.health.failed("account_publish", exc)
            raise

    # -- reading -------------------------------------------------------------------------

    async def subscribe(
        self, user_id: str, after: str | None, spec: SubscribeSpec
    ) -> tuple[EventLog, Subscription]:
        # Listening before the stream is read: nothing falls between the two.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WAIT_S):
                await self._ready.wait()
        fresh = self.get(user_id) is None
        account_log = self.log_of(user_id)
        if fresh or user_id in self._stale:
            try:
                await self._sync(user_id, account_log)
            except REDIS_FAULTS as exc:
                self.health.failed("account_read", exc)
                self._stale.add(user_id)  # served from what is here; read again later
        return await super().subscribe(user_id, after, spec)

    async def _sync(self, user_id: str, account_log: EventLog) -> None:
        """Bring ``account_log`` up to the stream: the missing events, or a ``rebase``
        (``reset`` for its subscribers) where the stream no longer holds them."""
        self._held.setdefault(user_id, [])
        try:
            first = account_log.last_seq + 1 if account_log.last_seq else 0
            epoch_raw, last_raw, entries = await self._read(
                keys=self._keys(user_id),
                args=[
                    secrets.token_urlsafe(12),
                    first,
                    self.buffer_events,
                    TTL_S,
                    account_log.epoch,
                ],
            )
        except BaseException:
            self._held.pop(user_id, None)
            raise
        self._stale.discard(user_id)
        epoch, last = _text(epoch_raw), int(last_raw)
        events = [(int(_text(entry_id).split("-")[0]), fields) for entry_id, fields in entries]
        if (
            epoch != account_log.epoch
            or (events and events[0][0] != account_log.last_seq + 1)
            or (not events and last != account_log.last_seq)
        ):
            start = events[0][0] - 1 if events else last
            if account_log.subscriber_count:
                self.resets += 1  # a `reset` for them (a new log's first read is not one)
            account_log.rebase(epoch, start)
        for seq, fields in events:
            # A script's XRANGE reply: [id, [field, value]] per entry; the one field is `d`.
            if seq == account_log.last_seq + 1 and len(fields) == 2:
                self._append(account_log, fields[1])
        for message in self._held.pop(user_id, []):
            self._deliver(user_id, account_log, *message)

    @staticmethod
    def _append(account_log: EventLog, payload: bytes) -> None:
        data = orjson.loads(payload)
        kind = data.pop("type")
        account_log.append(kind, data)

    def _deliver(
        self, user_id: str, account_log: EventLog, epoch: str, seq: int, payload: bytes
    ) -> None:
        held = self._held.get(user_id)
        if held is not None:
            held.append((epoch, seq, payload))
            return
        if epoch == account_log.epoch:
            if seq <= account_log.last_seq:
                return  # read with the stream already
            if seq == account_log.last_seq + 1:
                self._append(account_log, payload)
                return
        self._resync(user_id, account_log)

    def _resync(self, user_id: str, account_log: EventLog) -> None:
        if user_id in self._held:
            return
        task = asyncio.get_running_loop().create_task(self._resync_quietly(user_id, account_log))
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    async def _resync_quietly(self, user_id: str, account_log: EventLog) -> None:
        try:
            await self._sync(user_id, account_log)
        except REDIS_FAULTS as exc:
            self.health.failed("account_read", exc)
            self._stale.add(user_id)

    def _on_message(self, data: bytes) -> None:
        try:
            user_raw, epoch_raw, seq_raw, payload = data.split(b"\n", 3)
            user_id, epoch, seq = user_raw.decode(), epoch_raw.decode(), int(seq_raw)
        except ValueError:
            log.warning("account_message_malformed")
            return
        self.received += 1
        account_log = self.get(user_id)
        if account_log is None or account_log.closed:
            return  # no device of this user here
        self._deliver(user_id, account_log, epoch, seq, payload)

    def start(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(
            self._listen_forever(), name="account-channel-listener"
        )

    async def _listen_forever(self) -> None:
        first = True
        while True:
            try:
                async with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._ready.set()
                    if not first:
                        # Messages sent while the listener was away are in the streams only.
                        for user_id in list(self._users()):
                            self._stale.add(user_id)
                            account_log = self.get(user_id)
                            if account_log is not None and account_log.subscriber_count:
                                self._resync(user_id, account_log)
                    first = False
                    async for message in pubsub.listen():
                        data = message.get("data")
                        if isinstance(data, bytes):
                            self._on_message(data)
            except asyncio.CancelledError:
                raise
            except REDIS_FAULTS as exc:
                self.health.failed("account_listen", exc)
            except Exception:
                log.exception("account_listener_failed")
            first = False
            await asyncio.sleep(RESUBSCRIBE_S)

    def _users(self) -> list[str]:
        return list(self._logs)

    async def close(self) -> None:
        tasks = [t for t in (self._listener, *self._syncs) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().close()
