"""Who is calling: the interface the rest of the server uses.

:func:`auth_middleware <server.auth.middleware.auth_middleware>` resolves every request once
(bearer first, else the session cookie) and leaves the answer in ``request["user"]``;
WebSocket handshakes call :func:`user_for_token` / :func:`user_for_cookie` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web

from actors.clock import utcnow
from server.auth.cookies import COOKIES
from server.auth.csrf import origin_trusted
from server.auth.sessions import RESOLVED, SESSIONS, Resolved
from server.core.errors import ApiError, unauthorized
from server.core.header_text import token_shaped
from server.core.ids import token_hash

__all__ = [
    "CurrentUser",
    "current_user",
    "origin_trusted",
    "require_user",
    "resolve_cookie",
    "resolve_token",
    "user_for_cookie",
    "user_for_token",
]

#: Per request: who is signed in (read it through :func:`current_user`).
USER: web.RequestKey[CurrentUser | None] = web.RequestKey("user")


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: str
    name: str
    email: str | None
    image: str | None
    session_id: str
    via: Literal["bearer", "cookie"]
    session_expires_at: datetime  # long-lived streams end then (server.transports.liveness)

    @classmethod
    def of(cls, resolved: Resolved, via: Literal["bearer", "cookie"]) -> CurrentUser:
        u = resolved.user
        return cls(
            id=u.id,
            name=u.name,
            email=u.email,
            image=u.image,
            session_id=resolved.session.id,
            via=via,
            session_expires_at=resolved.session.expires_at,
        )


def current_user(request: web.Request) -> CurrentUser | None:
    """What the auth middleware resolved for this request."""
    user = request.get(USER)
    return user if isinstance(user, CurrentUser) else None


def current_session(request: web.Request) -> Resolved | None:
    resolved = request.get(RESOLVED)
    return resolved if isinstance(resolved, Resolved) else None


def require_user(request: web.Request) -> CurrentUser:
    """The signed-in user, or ``401`` in the contract's shape for this path."""
    user = current_user(request)
    if user is None:
        raise (
            unauthorized()
            if not request.path.startswith("/api/auth/")
            else ApiError(401, "unauthorized", "Authentication required")
        )
    return user


def bearer_token(request: web.Request) -> str | None:
    """The value of ``Authorization: Bearer <v>`` (scheme case-insensitive), if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


async def resolve_token(app: web.Application, token: str) -> Resolved | None:
    """A bearer value → its live session. Accepts the raw token, or Better Auth's signed
    ``token.sig`` form (URL-encoded or not), which some clients keep from ``set-auth-token``.
    Raw tokens never contain ``.``, so the two cannot be confused. A value of any other
    shape (stray bytes included) is simply invalid."""
    if not token or not token_shaped(token):
        return None
    if "." in token or "%" in token:
        unsigned = app[COOKIES].token_from_cookie(token)
        if unsigned is None:
            return None
        token = unsigned
    return await app[SESSIONS].resolve(token)


async def user_for_token(app: web.Application, token: str) -> CurrentUser | None:
    """Bearer token → user; ``None`` when unknown, expired or revoked (checked in the DB)."""
    resolved = await resolve_token(app, token)
    return CurrentUser.of(resolved, "bearer") if resolved else None


async def resolve_cookie(request: web.Request) -> tuple[Resolved | None, bool]:
    """The session of the session cookie: (resolved, from_cache).

    The signed cache cookie (5 minutes, bound to this token) skips the database unless the
    session is due to slide or was revoked (by this process; in cluster mode, by any).
    """
    codec = request.app[COOKIES]
    raw = request.cookies.get(codec.session_name)
    if not raw or not token_shaped(raw):
        return None, False
    token = codec.token_from_cookie(raw)
    if token is None:
        return None, False
    store = request.app[SESSIONS]
    cached_raw = request.cookies.get(codec.cache_name)
    if cached_raw:
        cached = codec.cached(cached_raw, token_hash(token))
        now = utcnow()
        if (
            cached is not None
            and cached.session.expires_at > now
            and not cached.needs_refresh(now)
            and await store.cache_trusted(cached.session.id)
        ):
            return cached, True
    return await store.resolve(token), False


async def user_for_cookie(request: web.Request) -> CurrentUser | None:
    """Cookie session → user (cache or database). No CSRF check: callers do their own."""
    resolved, _ = await resolve_cookie(request)
    return CurrentUser.of(resolved, "cookie") if resolved else None
