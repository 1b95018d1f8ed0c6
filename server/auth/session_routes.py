"""Session endpoints: get-session / session, sign-out, list-sessions, revoke-session,
revoke-other-sessions."""

from __future__ import annotations

import structlog
from aiohttp import web
from pydantic import Field

from actors.clock import iso
from server.auth.cookies import COOKIES
from server.auth.current import current_session, current_user, require_user
from server.auth.oauth_bodies import OAuthBody
from server.auth.sessions import SESSIONS
from server.core.errors import ApiError
from server.http import api_models as wire
from server.http.bodies import read_model
from server.storage.account_channel import ACCOUNT

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


@routes.get("/api/auth/get-session")
@routes.get("/api/auth/session")
async def get_session(request: web.Request) -> web.Response:
    """``{session, user}``, or ``null`` without a valid credential (never 401)."""
    resolved = current_session(request)
    if resolved is None:
        return wire.reply(wire.MaybeSession, None)
    return wire.reply(
        wire.MaybeSession,
        {"session": resolved.session.to_json(), "user": resolved.user.to_json()},
    )


@routes.post("/api/auth/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    user = current_user(request)
    if user is not None:
        await request.app[SESSIONS].revoke(user.session_id)
        await request.app[ACCOUNT].session_revoked(user.id, user.session_id)
        log.info("signed_out", session_id=user.session_id)
    response = wire.reply(wire.Success, {"success": True})
    codec = request.app[COOKIES]
    if codec.session_name in request.cookies or codec.cache_name in request.cookies:
        codec.clear_session(response)
    return response


@routes.get("/api/auth/list-sessions")
async def list_sessions(request: web.Request) -> web.Response:
    user = require_user(request)
    rows = await request.app[SESSIONS].list_for_user(user.id)
    return wire.reply(
        wire.SessionList,
        [
            {
                "id": row["id"],
                "createdAt": iso(row["created_at"]),
                "updatedAt": iso(row["updated_at"]),
                "expiresAt": iso(row["expires_at"]),
                "ipAddress": row["ip_address"],
                "userAgent": row["user_agent"],
                "current": row["id"] == user.session_id,
            }
            for row in rows
        ],
    )


class RevokeRequest(OAuthBody):
    id: str | None = Field(None, max_length=64)
    token: str | None = Field(None, max_length=512)


@routes.post("/api/auth/revoke-session")
async def revoke_session(request: web.Request) -> web.Response:
    """Revoke one of the caller's sessions. Unknown and foreign sessions get the same
    answer as one's own (``{status: true}``): nothing tells them apart."""
    user = require_user(request)
    body = await read_model(request, RevokeRequest)
    if body.id is None and body.token is None:
        raise ApiError(400, "invalid_request", "id or token is required")
    token = body.token
    if token is not None and ("." in token or "%" in token):
        token = request.app[COOKIES].token_from_cookie(token) or ""
    revoked = await request.app[SESSIONS].revoke_owned(user.id, session_id=body.id, token=token)
    for session_id in revoked:
        await request.app[ACCOUNT].session_revoked(user.id, session_id)
    log.info("session_revoked", by_session=user.session_id)
    return wire.reply(wire.RevokeStatus, {"status": True})


@routes.post("/api/auth/revoke-other-sessions")
async def revoke_other_sessions(request: web.Request) -> web.Response:
    """Sign out everywhere else (Better Auth's endpoint): revoke every session of the
    caller but the one making the request; each is announced on the account channel."""
    user = require_user(request)
    revoked = await request.app[SESSIONS].revoke_others(user.id, user.session_id)
    for session_id in revoked:
        await request.app[ACCOUNT].session_revoked(user.id, session_id)
    log.info("other_sessions_revoked", by_session=user.session_id, count=len(revoked))
    return wire.reply(wire.RevokeStatus, {"status": True})
