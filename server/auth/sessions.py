"""Sessions: start, look up (and slide), revoke, list.

A session token is 256 random bits; only its SHA-256 is stored. A lookup is one indexed
query (session joined with its user). A session used more than a day after its last refresh
is extended to seven days from now: the only time a lookup writes.

A found session is remembered in the process for ``CERO_AUTH_CACHE_SECONDS`` (keyed by the
token's digest), so a client's next requests skip the query (issue 21: auth was 0.7–0.8 ms
of each turn's time to first token, most of it the round trip). The memory never outlives
the session: a revocation drops it at once (this process's own, and in cluster mode every
hit first asks Redis whether any process revoked it, as the cookie cache does), an entry
past the session's expiry or due for its daily slide goes back to the database, and a
user's profile (name, e-mail, image) is at most that old. What the memory cannot see: a
session row deleted or changed in the database behind the server's back (by hand, or by
another process without cluster mode) counts from the next lookup, within that time.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from actors.clock import iso, utcnow
from server.core.header_text import MAX_TOKEN_CHARS, clean_text
from server.core.ids import new_id, new_token, same, token_hash
from server.storage.tables import Session, User
from state.revocations import Revocations

SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions")
#: Per request: what the middleware resolved (read it through :mod:`server.auth.current`).
RESOLVED: web.RequestKey[Resolved] = web.RequestKey("auth_resolved")

SESSION_TTL = timedelta(days=7)
UPDATE_AGE = timedelta(days=1)
_REVOKED_MEMORY_S = 600.0  # longer than the cookie cache's 5 minutes
#: How long a looked-up session is remembered in the process by default (see the module
#: docstring; ``CERO_AUTH_CACHE_SECONDS``).
TOKEN_CACHE_S = 30.0
#: Sessions remembered at most (the oldest go first).
TOKEN_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    user_id: str
    token_hash: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "userId": self.user_id,
            "expiresAt": iso(self.expires_at),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    name: str
    email: str | None
    image: str | None
    email_verified: bool

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "image": self.image,
            "emailVerified": self.email_verified,
        }


@dataclass(frozen=True, slots=True)
class Resolved:
    """A live session and its user."""

    session: SessionInfo
    user: UserInfo
    slid: bool = False  # extended by this lookup: a cookie client must get its cookie again

    def needs_refresh(self, now: datetime) -> bool:
        return now - self.session.updated_at > UPDATE_AGE


_COLUMNS = (
    Session.id,
    Session.user_id,
    Session.token_hash,
    Session.expires_at,
    Session.created_at,
    Session.updated_at,
    Session.user_id.name,
    Session.user_id.email,
    Session.user_id.image,
    Session.user_id.email_verified,
)


#: A digest no real token has: stands for the parameter while the lookup's SQL is rendered.
_DIGEST_MARK = "__cero_token_digest__"


@functools.cache
def _lookup_sql() -> str:
    """The session-by-token lookup as SQL with one ``{}`` parameter, rendered once per
    process. Every authenticated request runs it; building it with Piccolo's query builder
    each time cost 1.9 ms of CPU a lookup against 0.5 ms for the same SQL run as ``raw``
    (PostgreSQL, 300 lookups each, same process: issue 21's auth phase)."""
    query = Session.select(*_COLUMNS).where(Session.token_hash == _DIGEST_MARK)
    template = str(query.querystrings[0])
    quoted = f"'{_DIGEST_MARK}'"
    assert template.count(quoted) == 1, template
    return template.replace(quoted, "{}")


def _resolved(row: dict[str, Any]) -> Resolved:
    return Resolved(
        session=SessionInfo(
            id=row["id"],
            user_id=row["user_id"],
            token_hash=row["token_hash"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        ),
        user=UserInfo(
            id=row["user_id"],
            name=row["user_id.name"] or "",
            email=row["user_id.email"],
            image=row["user_id.image"],
            email_verified=bool(row["user_id.email_verified"]),
        ),
    )


class SessionStore:
    """Session persistence. Holds only a short memory of revoked ids (see :meth:`revoked`)
    and the listeners told of each revocation (live connections end with their session).
    In cluster mode :attr:`shared` carries revocations to every process
    (:class:`cluster.state.revocations.RedisRevocations`)."""

    def __init__(self, *, cache_seconds: float = TOKEN_CACHE_S) -> None:
        self.cache_seconds = cache_seconds
        self._revoked: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Future[Resolved | None]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self.shared: Revocations | None = None
        #: token digest → (its live session, ``time.monotonic()`` when looked up)
        self._known: dict[str, tuple[Resolved, float]] = {}
        self._revocations = 0  # how many revocations this process has heard of

    def on_revoke(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(session_id)`` (synchronously, must not raise) for every session
        revoked from now on; return a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def note_revoked(self, session_id: str) -> None:
        """A session is gone: remember it and tell the listeners. :meth:`revoke` calls it;
        so will cluster mode's relay for a revocation published by another process."""
        self._remember_revoked(session_id)
        self._revocations += 1
        self._in_flight.clear()  # a request from now on asks the database itself
        self._known = {d: e for d, e in self._known.items() if e[0].session.id != session_id}
        for listener in list(self._listeners):
            listener(session_id)

    async def start(
        self, user_id: str, *, ip_address: str | None = None, user_agent: str | None = None
    ) -> tuple[str, Resolved]:
        """A new session (a new token at every sign-in: no fixation); return (token, it)."""
        token = new_token()
        now = utcnow()
        session_id = new_id()
        await Session.insert(
            Session(
                id=session_id,
                user_id=user_id,
                token_hash=token_hash(token),
                expires_at=now + SESSION_TTL,
                created_at=now,
                updated_at=now,
                ip_address=clean_text(ip_address, 64),
                user_agent=clean_text(user_agent, 512),
            )
        ).run()
        rows = await Session.select(*_COLUMNS).where(Session.id == session_id).run()
        return token, _resolved(rows[0])

    async def resolve(self, token: str) -> Resolved | None:
        """The live session of a raw token, slid when due; ``None`` when unknown or expired.

        Concurrent lookups of one token share one query (single flight): a client that
        starts 200 answers at once costs one lookup, not 200 queued behind each other
        (issue 21: 200 sends with one token waited ~100 ms each for the database's
        threads). Nothing is kept once the query returns, and a revocation drops the
        shared queries in flight, so no answer is older than the request asking."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = token_hash(token)
        known = await self._remembered(digest)
        if known is not None:
            return known
        pending = self._in_flight.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(digest))
            self._in_flight[digest] = pending
            pending.add_done_callback(functools.partial(self._landed, digest))
        found = await asyncio.shield(pending)
        if found is not None and self.revoked(found.session.id):
            return None  # revoked while the shared query ran
        return found

    async def _remembered(self, digest: str) -> Resolved | None:
        """The session looked up for ``digest`` within :attr:`cache_seconds`, when it is
        still good to use without the database (unexpired, not due to slide, revoked
        nowhere); ``None`` sends the caller to the database."""
        entry = self._known.get(digest)
        if entry is None:
            return None
        found, at = entry
        now = utcnow()
        if (
            time.monotonic() - at >= self.cache_seconds
            or found.session.expires_at <= now
            or found.needs_refresh(now)
            or not await self.cache_trusted(found.session.id)
        ):
            self._known.pop(digest, None)
            return None
        if found.slid:
            found = Resolved(session=found.session, user=found.user)  # slid once, told once
        return found

    def _remember(self, digest: str, found: Resolved) -> None:
        if self.cache_seconds <= 0:
            return
        if len(self._known) >= TOKEN_CACHE_MAX:
            self._known.pop(next(iter(self._known)))
        self._known[digest] = (found, time.monotonic())

    def _landed(self, digest: str, future: asyncio.Future[Resolved | None]) -> None:
        if self._in_flight.get(digest) is future:
            del self._in_flight[digest]
        if not future.cancelled():
            future.exception()  # retrieved: every waiter may have gone

    async def _lookup(self, digest: str) -> Resolved | None:
        revocations = self._revocations
        found = await self._query(digest)
        if found is not None and self._revocations == revocations:
            self._remember(digest, found)  # (a revocation during the query: not kept)
        return found

    async def _query(self, digest: str) -> Resolved | None:
        rows = await Session.raw(_lookup_sql(), digest).run()
        if not rows or not same(rows[0]["token_hash"], digest):
            return None
        found = _resolved(rows[0])
        now = utcnow()
        if found.session.expires_at <= now:
            await Session.delete().where(Session.id == found.session.id).run()
            return None
        if found.needs_refresh(now):
            expires = now + SESSION_TTL
            await (
                Session.update({Session.expires_at: expires, Session.updated_at: now})
                .where(Session.id == found.session.id)
                .run()
            )
            slid = SessionInfo(
                id=found.session.id,
                user_id=found.session.user_id,
                token_hash=found.session.token_hash,
                expires_at=expires,
                created_at=found.session.created_at,
                updated_at=now,
            )
            found = Resolved(session=slid, user=found.user, slid=True)
        return found

    async def revoke(self, session_id: str) -> None:
        await Session.delete().where(Session.id == session_id).run()
        self.note_revoked(session_id)
        if self.shared is not None:
            await self.shared.publish(session_id)

    async def cache_trusted(self, session_id: str) -> bool:
        """May a cookie cache entry of ``session_id`` be believed without the database?
        Not once this process revoked it, nor, in cluster mode, any process (asked in
        Redis, where a revocation lives as long as a cache entry)."""
        if self.revoked(session_id):
            return False
        return self.shared is None or not await self.shared.revoked(session_id)

    async def expiries(self, session_ids: Iterable[str]) -> dict[str, datetime]:
        """``expiresAt`` of those of ``session_ids`` that still exist (revoked ones do not;
        expired ones may, until a lookup deletes them). One query per 500 ids."""
        ids = list(session_ids)
        found: dict[str, datetime] = {}
        for start in range(0, len(ids), 500):
            rows = (
                await Session.select(Session.id, Session.expires_at)
                .where(Session.id.is_in(ids[start : start + 500]))
                .run()
            )
            found.update((str(row["id"]), row["expires_at"]) for row in rows)
        return found

    async def revoke_owned(
        self, user_id: str, *, session_id: str | None = None, token: str | None = None
    ) -> list[str]:
        """Revoke one of ``user_id``'s sessions by id or raw token; others' are untouched.
        The ids revoked."""
        if session_id is None and token is None:
            return []
        ids = await self._ids_matching(user_id, session_id=session_id, token=token)
        for sid in ids:
            await self.revoke(sid)
        return ids

    async def revoke_others(self, user_id: str, keep: str) -> list[str]:
        """Revoke every session of ``user_id`` but ``keep`` (the caller's own). The ids
        revoked."""
        rows = (
            await Session.select(Session.id)
            .where((Session.user_id == user_id) & (Session.id != keep))
            .run()
        )
        ids = [str(row["id"]) for row in rows]
        for sid in ids:
            await self.revoke(sid)
        return ids

    async def _ids_matching(
        self, user_id: str, *, session_id: str | None, token: str | None
    ) -> list[str]:
        query = Session.select(Session.id).where(Session.user_id == user_id)
        if session_id is not None:
            query = query.where(Session.id == session_id)
        if token is not None:
            query = query.where(Session.token_hash == token_hash(token))
        return [str(row["id"]) for row in await query.run()]

    async def list_for_user(self, user_id: str) -> list[dict[str, Any]]:
        now = utcnow()
        rows: list[dict[str, Any]] = (
            await Session.select(
                Session.id,
                Session.created_at,
                Session.updated_at,
                Session.expires_at,
                Session.ip_address,
                Session.user_agent,
            )
            .where((Session.user_id == user_id) & (Session.expires_at > now))
            .order_by(Session.created_at, ascending=False)
            .run()
        )
        return rows

    async def user(self, user_id: str) -> UserInfo | None:
        rows = await User.select().where(User.id == user_id).run()
        if not rows:
            return None
        row = rows[0]
        return UserInfo(
            id=row["id"],
            name=row["name"] or "",
            email=row["email"],
            image=row["image"],
            email_verified=bool(row["email_verified"]),
        )

    def revoked(self, session_id: str) -> bool:
        """Revoked by this process lately: lets a cookie cache entry die before its 5 minutes."""
        return session_id in self._revoked

    def _remember_revoked(self, session_id: str) -> None:
        now = time.monotonic()
        if len(self._revoked) > 10_000:
            cutoff = now - _REVOKED_MEMORY_S
            self._revoked = {k: v for k, v in self._revoked.items() if v > cutoff}
        self._revoked[session_id] = now
