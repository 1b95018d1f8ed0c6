"""Resolves the current user of every request, and enforces the CSRF origin rule.

Bearer first (``Authorization: Bearer``; an invalid one means anonymous, never a fallback
to the cookie), else the session cookie. A cookie-authenticated POST/PUT/PATCH/DELETE
without a trusted ``Origin``/``Referer`` is refused with 403 on every route of the app;
bearer requests are exempt, and WebSocket upgrades (GET) are checked by the WS route.
"""

from __future__ import annotations

from typing import Literal

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from server.auth.cookies import COOKIES, defer
from server.auth.csrf import UNSAFE_METHODS, origin_trusted
from server.auth.current import (
    USER,
    CurrentUser,
    bearer_token,
    resolve_cookie,
    resolve_token,
)
from server.auth.sessions import RESOLVED, Resolved
from server.core.errors import ApiError

log = structlog.get_logger(__name__)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[USER] = None
    resolved: Resolved | None = None
    via: Literal["bearer", "cookie"] = "bearer"
    token = bearer_token(request)
    if token is not None:
        resolved = await resolve_token(request.app, token)
    # The header first: ``request.cookies`` caches a parsed (empty) mapping on the request,
    # kept as long as the request lives (a WebSocket's whole life).
    elif hdrs.COOKIE in request.headers and request.app[COOKIES].session_name in request.cookies:
        via = "cookie"
        resolved = await _from_cookie(request)
        if (
            resolved is not None
            and request.method in UNSAFE_METHODS
            and not origin_trusted(request)
        ):
            log.info("csrf_rejected", method=request.method, path=request.path)
            code = "invalid_origin" if request.path.startswith("/api/auth/") else "forbidden"
            raise ApiError(403, code, "Cookie-authenticated request from an untrusted origin")
    if resolved is None:
        return await handler(request)
    request[RESOLVED] = resolved
    request[USER] = CurrentUser.of(resolved, via)
    # bind/reset, not ``bound_contextvars``: see request_id_middleware (server.http.middleware).
    bound = structlog.contextvars.bind_contextvars(user_id=resolved.user.id)["user_id"]
    try:
        return await handler(request)
    finally:
        structlog.contextvars.reset_contextvars(user_id=bound)


async def _from_cookie(request: web.Request) -> Resolved | None:
    codec = request.app[COOKIES]
    resolved, from_cache = await resolve_cookie(request)
    if resolved is None:
        defer(request, codec.clear_session)
    elif not from_cache:
        defer(request, lambda response: codec.set_cache(response, resolved))
        token = codec.token_from_cookie(request.cookies.get(codec.session_name, ""))
        if resolved.slid and token is not None:
            # The session now lasts 7 more days: so must the browser's cookie.
            defer(request, lambda response: codec.set_session_token(response, token))
    return resolved
