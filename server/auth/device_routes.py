"""HTTP side of the device flow: ``/api/auth/device/*`` (RFC 8628, Better Auth's paths).

Every answer carries ``Cache-Control: no-store`` (added for all of ``/api/auth/`` by
:func:`server.auth.cookies.apply_deferred`).
"""

from __future__ import annotations

import structlog
from aiohttp import web
from pydantic import Field

from server.auth import device_flow, verification
from server.auth.client_ip import client_ip
from server.auth.current import current_user, require_user
from server.auth.oauth_bodies import OAuthBody, read_oauth
from server.errors import ApiError, json_response
from server.state import SESSIONS, SETTINGS

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


class CodeRequest(OAuthBody):
    client_id: str | None = Field(None, max_length=255)
    scope: str | None = Field(None, max_length=1024)


class TokenRequest(OAuthBody):
    grant_type: str | None = Field(None, max_length=256)
    device_code: str | None = Field(None, max_length=512)
    client_id: str | None = Field(None, max_length=255)


class DecisionRequest(OAuthBody):
    userCode: str | None = Field(None, max_length=4096)
    user_code: str | None = Field(None, max_length=4096)


@routes.post("/api/auth/device/code")
async def device_code(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await read_oauth(request, CodeRequest)
    if body.client_id is None:
        raise ApiError(400, "invalid_request", "client_id is required")
    if settings.device_client_ids and body.client_id not in settings.device_client_ids:
        raise ApiError(400, "invalid_client", "Invalid client ID")
    issued = await device_flow.issue(
        body.client_id,
        body.scope or "",
        ttl=settings.device_code_ttl,
        interval=settings.device_poll_interval,
    )
    shown = device_flow.display(issued.user_code)
    verification_uri = f"{settings.public_url}/device"
    log.info("device_code_issued", client_id=body.client_id, expires_in=issued.expires_in)
    return json_response(
        {
            "device_code": issued.device_code,
            "user_code": shown,
            "verification_uri": verification_uri,
            "verification_uri_complete": f"{verification_uri}?user_code={shown}",
            "expires_in": issued.expires_in,
            "interval": issued.interval,
        }
    )


@routes.post("/api/auth/device/token")
async def device_token(request: web.Request) -> web.Response:
    body = await read_oauth(request, TokenRequest)
    if body.grant_type is None:
        raise ApiError(400, "invalid_request", "grant_type is required")
    if body.grant_type != device_flow.GRANT_TYPE:
        raise ApiError(400, "unsupported_grant_type", "Unsupported grant type")
    if body.device_code is None:
        raise ApiError(400, "invalid_request", "device_code is required")
    if body.client_id is None:
        raise ApiError(400, "invalid_request", "client_id is required")
    redeemed = await device_flow.poll(
        body.device_code,
        body.client_id,
        request.app[SESSIONS],
        ip_address=client_ip(request),
        user_agent=request.headers.get("User-Agent"),
    )
    session = redeemed.resolved.session
    log.info("device_token_issued", user_id=session.user_id, session_id=session.id)
    expires_in = max(0, int((session.expires_at - session.created_at).total_seconds()))
    response = json_response(
        {
            "access_token": redeemed.token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": redeemed.scope,
        }
    )
    response.headers["set-auth-token"] = redeemed.token
    response.headers["Access-Control-Expose-Headers"] = "set-auth-token"
    return response


@routes.get("/api/auth/device")
async def device_lookup(request: web.Request) -> web.Response:
    raw = request.query.get("user_code") or None
    user = current_user(request)
    view = await verification.lookup(request, raw, user.id if user else None)
    body: dict[str, object] = {"user_code": raw, "status": view.status}
    if user is not None and view.claimed_by == user.id:
        body["client_id"] = view.client_id
        body["scope"] = view.scope
    return json_response(body)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    user = require_user(request)
    body = await read_oauth(request, DecisionRequest)
    await verification.decide(request, body.userCode or body.user_code, user.id, approve=approve)
    return json_response({"success": True})


@routes.post("/api/auth/device/approve")
async def device_approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


@routes.post("/api/auth/device/deny")
async def device_deny(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)
