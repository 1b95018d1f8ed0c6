"""The WebSocket handshake's authentication, before the upgrade.

A bearer header the auth middleware already resolved is reused; otherwise ``?token=`` or
the ``bearer.<token>`` subprotocol, else the session cookie with a trusted ``Origin``
(CSRF). No valid credential: ``401`` before the upgrade.
"""

from __future__ import annotations

from aiohttp import web

from server.auth.csrf import origin_trusted
from server.auth.current import CurrentUser, current_user, user_for_cookie, user_for_token
from server.core.errors import ApiError

SUBPROTOCOL = "cero.v1"


async def authenticate(request: web.Request) -> tuple[CurrentUser, str | None]:
    """The user of a handshake and the subprotocol to answer with."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    offered = [p for p in offered if p]
    token = request.query.get("token")
    chosen: str | None = SUBPROTOCOL if SUBPROTOCOL in offered else None
    for proto in offered:
        if proto.startswith("bearer."):
            token = token or proto.removeprefix("bearer.")
            chosen = chosen or proto  # a browser needs one offered protocol echoed back
    resolved = current_user(request)  # an Authorization: Bearer header (CLI clients)
    if resolved is not None and resolved.via == "bearer":
        return resolved, chosen
    if token:
        user = await user_for_token(request.app, token)
        if user is None:
            raise ApiError(401, "unauthorized", "Unauthorized")
        return user, chosen
    user = await user_for_cookie(request)
    if user is None:
        raise ApiError(401, "unauthorized", "Unauthorized")
    if not origin_trusted(request):
        raise ApiError(403, "forbidden", "Untrusted Origin for a cookie-authenticated WebSocket")
    return user, chosen
