"""Sign-in: device flow (RFC 8628), GitHub OAuth, sessions and bearer tokens.

Wire-compatible with Better Auth. :func:`setup` adds the routes and hooks; the middleware in
:mod:`server.auth.middleware` resolves the current user for every request, and
:mod:`server.auth.current` is the interface the rest of the server uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from server.auth.current import (
    CurrentUser,
    current_user,
    origin_trusted,
    require_user,
    user_for_cookie,
    user_for_token,
)

__all__ = [
    "CurrentUser",
    "current_user",
    "origin_trusted",
    "require_user",
    "setup",
    "user_for_cookie",
    "user_for_token",
]


def setup(app: web.Application) -> None:
    """Register sign-in state, routes and start-up hooks on ``app``."""
    from server.auth import device_routes, github_routes, local, session_routes, sign_in_limit
    from server.auth.cookies import COOKIES, CookieCodec, apply_deferred
    from server.auth.github_routes import OAUTH_STATES
    from server.auth.sessions import SESSIONS, SessionStore
    from server.auth.verification import LIMITER
    from server.core.app_keys import SETTINGS
    from state.oauth_states import MemoryOAuthStates
    from state.wrong_codes import MemoryWrongCodes

    settings = app[SETTINGS]
    app[SESSIONS] = SessionStore(cache_seconds=settings.auth_cache_seconds)
    app[COOKIES] = CookieCodec(settings.auth_secret, secure=settings.secure_cookies)
    app[LIMITER] = MemoryWrongCodes()
    app[OAUTH_STATES] = MemoryOAuthStates()
    app.on_response_prepare.append(apply_deferred)
    if settings.github_enabled:
        app.cleanup_ctx.append(_github_http)
    device_routes.setup(app)
    sign_in_limit.setup(app)
    for table in (
        session_routes.routes,
        github_routes.routes,
        local.routes,
    ):
        app.add_routes(table)


async def _github_http(app: web.Application) -> AsyncIterator[None]:
    from server.auth.github import GITHUB_HTTP, TIMEOUT

    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        app[GITHUB_HTTP] = http
        yield
