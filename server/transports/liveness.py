"""Live connections end with their session (docs/api.md: a revoked, signed-out or expired
session's WebSocket closes with 4001 within a second, its SSE streams end).

HTTP requests check the session on every request; a socket or a stream checked it once, at
its start. :class:`LiveSessions` is the per-process registry of what is still open, by
session id (weak references: a forgotten connection costs nothing), ended by:

- a revocation in this process: the :class:`~server.auth.sessions.SessionStore` calls
  :meth:`LiveSessions.revoked` from ``revoke()`` (sign-out, revoke-session);
- expiry: one timer per watched session at its ``expiresAt``;
- a revocation by another process: every ``CERO_SESSION_RECHECK`` seconds the watched ids
  are looked up in the database (one query per 500 sessions), and the in-memory set of
  revoked ids is consulted every second. In cluster mode a revocation by another process
  also arrives at once through Redis pub/sub: :mod:`server.cluster_mode.shared_state`'s
  listener calls ``SessionStore.note_revoked``, which lands in :meth:`revoked` like a local
  one.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Protocol

import structlog
from aiohttp import web

from actors.clock import utcnow
from server.auth.current import CurrentUser
from server.auth.sessions import SESSIONS, SessionStore
from server.core.app_keys import SETTINGS

log = structlog.get_logger(__name__)

#: How often the in-memory set of revoked sessions is consulted (seconds).
TICK_S = 1.0


class Watcher(Protocol):
    def session_ended(self) -> None:
        """The session is gone: stop now (synchronously; must not raise)."""


class _Watched:
    __slots__ = ("expires_at", "timer", "watchers")

    def __init__(self, expires_at: datetime) -> None:
        self.expires_at = expires_at
        self.timer: asyncio.TimerHandle | None = None
        self.watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()


class LiveSessions:
    def __init__(self, store: SessionStore, *, recheck: float) -> None:
        self._store = store
        self._recheck = recheck
        self._sessions: dict[str, _Watched] = {}
        self._forget = store.on_revoke(self.revoked)

    def __len__(self) -> int:
        return len(self._sessions)

    def watch(self, session_id: str, expires_at: datetime, watcher: Watcher) -> None:
        """End ``watcher`` with the session (at once if it is already gone)."""
        if self._store.revoked(session_id) or expires_at <= utcnow():
            watcher.session_ended()
            return
        entry = self._sessions.get(session_id)
        if entry is None:
            entry = self._sessions[session_id] = _Watched(expires_at)
            self._arm(session_id, entry)
        elif expires_at > entry.expires_at:  # the session slid since the first connection
            entry.expires_at = expires_at
            self._arm(session_id, entry)
        entry.watchers.add(watcher)

    def unwatch(self, session_id: str, watcher: Watcher) -> None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return
        entry.watchers.discard(watcher)
        if not entry.watchers:
            self._drop(session_id)

    def revoked(self, session_id: str) -> None:
        """The session is gone (the store's listener; also used for expiry)."""
        entry = self._drop(session_id)
        if entry is None:
            return
        watchers = list(entry.watchers)
        log.info("session_connections_ended", session_id=session_id, connections=len(watchers))
        for watcher in watchers:
            try:
                watcher.session_ended()
            except Exception:
                log.exception("session_end_failed", session_id=session_id)

    async def still_valid(self, session_id: str) -> bool:
        """One database lookup: is the session there and unexpired (for commands that
        start work, so that a revocation by another process is never missed)?"""
        if self._store.revoked(session_id):
            return False
        expires = (await self._store.expiries([session_id])).get(session_id)
        return expires is not None and expires > utcnow()

    # -- periodic re-validation ---------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(TICK_S, self._recheck)
        last_recheck = loop.time()
        while True:
            await asyncio.sleep(tick)
            for session_id in [s for s in self._sessions if self._store.revoked(s)]:
                self.revoked(session_id)
            for session_id in [s for s, e in self._sessions.items() if not e.watchers]:
                self._drop(session_id)  # their connections were collected
            if self._sessions and loop.time() - last_recheck >= self._recheck:
                last_recheck = loop.time()
                try:
                    await self.recheck()
                except Exception as exc:
                    # The database is unavailable: keep the connections, look again later.
                    log.warning("session_recheck_failed", error=repr(exc))

    async def recheck(self) -> None:
        """Look every watched session up in the database: gone → ended; slid → re-armed."""
        ids = list(self._sessions)
        found = await self._store.expiries(ids)
        now = utcnow()
        for session_id in ids:
            entry = self._sessions.get(session_id)
            if entry is None:
                continue
            expires = found.get(session_id)
            if expires is None or expires <= now:
                self.revoked(session_id)
            elif expires != entry.expires_at:
                entry.expires_at = expires
                self._arm(session_id, entry)

    def close(self) -> None:
        self._forget()
        for entry in self._sessions.values():
            if entry.timer is not None:
                entry.timer.cancel()
        self._sessions.clear()

    # -- internals -----------------------------------------------------------------------------

    def _arm(self, session_id: str, entry: _Watched) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        delay = (entry.expires_at - utcnow()).total_seconds()
        entry.timer = asyncio.get_running_loop().call_later(
            max(delay, 0.0), self.revoked, session_id
        )

    def _drop(self, session_id: str) -> _Watched | None:
        entry = self._sessions.pop(session_id, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()
        return entry


LIVE_SESSIONS: web.AppKey[LiveSessions] = web.AppKey("live_sessions")


@contextlib.contextmanager
def watching(app: web.Application, user: CurrentUser, watcher: Watcher) -> Iterator[None]:
    """``watcher.session_ended()`` is called if ``user``'s session ends inside the block."""
    sessions = app[LIVE_SESSIONS]
    sessions.watch(user.session_id, user.session_expires_at, watcher)
    try:
        yield
    finally:
        sessions.unwatch(user.session_id, watcher)


async def _running(app: web.Application) -> AsyncIterator[None]:
    sessions = app[LIVE_SESSIONS]
    task = asyncio.create_task(sessions.run(), name="live-sessions")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sessions.close()


def setup(app: web.Application) -> None:
    """After ``auth.setup`` (it needs the session store)."""
    app[LIVE_SESSIONS] = LiveSessions(app[SESSIONS], recheck=app[SETTINGS].session_recheck)
    app.cleanup_ctx.append(_running)
