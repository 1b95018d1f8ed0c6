"""HTTP side of the device flow: ``/api/auth/device/*`` (RFC 8628, Better Auth's paths).

Every answer carries ``Cache-Control: no-store`` (added for all of ``/api/auth/`` by
:func:`server.auth.cookies.apply_deferred`).

Issuing codes is anonymous, so it is bounded: ``CERO_DEVICE_CODE_LIMIT`` requests per client
IP (IPv6: per /64) in ``CERO_DEVICE_CODE_WINDOW`` seconds, short ``client_id`` and ``scope``,
and a purge task (:func:`purge_task`) that deletes expired codes every
``CERO_DEVICE_PURGE_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from pydantic import Field

from actors.clock import iso
from server.auth import device_flow, verification
from server.auth.current import current_user, require_user
from server.auth.oauth_bodies import OAuthBody, read_oauth
from server.auth.sessions import SESSIONS
from server.auth.sign_in_limit import admit_address
from server.core import device_clients
from server.core.app_keys import SETTINGS
from server.core.client_ip import client_ip
from server.core.errors import ApiError
from server.http import api_models as wire
from state.window import MemoryWindow, Window

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

PURGE_STOP_TIMEOUT_S = 5.0
ISSUE_LIMITER: web.AppKey[Window] = web.AppKey("device_code_issue_limiter")


def setup(app: web.Application) -> None:
    """The per-IP issue limiter and the purge task (after the database's cleanup_ctx)."""
    settings = app[SETTINGS]
    app[ISSUE_LIMITER] = MemoryWindow(settings.device_code_limit, settings.device_code_window)
    app.cleanup_ctx.append(purge_task)
    app.add_routes(routes)


async def purge_task(app: web.Application) -> AsyncIterator[None]:
    """Purge on a timer. Stopping lets a purge in flight finish (up to a bound) rather than
    cancel it: a cancelled aiosqlite query still completes in its thread and then calls
    into a loop that may be closed by then."""
    stop = asyncio.Event()
    task = asyncio.create_task(_purge_until(stop, app[SETTINGS].device_purge_interval))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), PURGE_STOP_TIMEOUT_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _purge_until(stop: asyncio.Event, interval: float) -> None:
    while not stop.is_set():
        try:
            purged = await device_flow.purge_expired()
        except Exception as exc:  # the database may be briefly away: try again next time
            log.warning("device_purge_failed", error=type(exc).__name__)
        else:
            if purged:
                log.info("device_codes_purged", count=purged)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


class CodeRequest(OAuthBody):
    client_id: str | None = Field(None, max_length=device_flow.MAX_CLIENT_ID)
    scope: str | None = Field(None, max_length=device_flow.MAX_SCOPE)


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
    await admit_address(
        request,
        request.app[ISSUE_LIMITER],
        "device_codes",
        "Too many device code requests; try again later",
    )
    body = await read_oauth(request, CodeRequest)
    if body.client_id is None:
        raise ApiError(400, "invalid_request", "client_id is required")
    if not device_clients.admitted(body.client_id, settings.device_client_ids):
        raise ApiError(400, "invalid_client", "Invalid client ID")
    issued = await device_flow.issue(
        body.client_id,
        body.scope or "",
        ttl=settings.device_code_ttl,
        interval=settings.device_poll_interval,
        requested_from=client_ip(request),
    )
    shown = device_flow.display(issued.user_code)
    verification_uri = f"{settings.public_url}/device"
    log.info("device_code_issued", client_id=body.client_id, expires_in=issued.expires_in)
    return wire.reply(
        wire.DeviceCode,
        {
            "device_code": issued.device_code,
            "user_code": shown,
            "verification_uri": verification_uri,
            "verification_uri_complete": f"{verification_uri}?user_code={shown}",
            "expires_in": issued.expires_in,
            "interval": issued.interval,
        },
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
    response = wire.reply(
        wire.DeviceToken,
        {
            "access_token": redeemed.token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": redeemed.scope,
        },
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
        shown = device_clients.label(view.client_id, request.app[SETTINGS].device_client_ids)
        body["client_id"] = view.client_id
        body["scope"] = view.scope
        body["clientName"] = shown.name
        body["verified"] = shown.verified
        body["requestedAt"] = iso(view.requested_at)  # the contract's form, like every timestamp
        body["requestedFrom"] = view.requested_from
    return wire.reply(wire.DeviceLookup, body)


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    user = require_user(request)
    body = await read_oauth(request, DecisionRequest)
    await verification.decide(request, body.userCode or body.user_code, user.id, approve=approve)
    return wire.reply(wire.Success, {"success": True})


@routes.post("/api/auth/device/approve")
async def device_approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


@routes.post("/api/auth/device/deny")
async def device_deny(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)
