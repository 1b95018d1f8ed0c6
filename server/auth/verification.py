"""The signed-in user's side of the device flow, shared by the JSON API and the /device page:
user-code lookups and decisions, with wrong codes counted per client IP (5 / 10 min → 429)."""

from __future__ import annotations

import structlog
from aiohttp import web

from server.auth import device_flow
from server.auth.client_ip import client_ip
from server.auth.keys import LIMITER
from server.errors import ApiError

log = structlog.get_logger(__name__)


def _allowed_ip(request: web.Request) -> str:
    ip = client_ip(request)
    retry = request.app[LIMITER].retry_after(ip)
    if retry is not None:
        raise ApiError(
            429,
            "rate_limited",
            "Too many wrong codes; try again later",
            headers={"Retry-After": str(retry)},
        )
    return ip


def _wrong(request: web.Request, ip: str) -> device_flow.UnknownCode:
    request.app[LIMITER].record_wrong(ip)
    log.info("device_wrong_code", ip=ip)
    return device_flow.UnknownCode()


def _canonical(request: web.Request, raw: str | None, ip: str) -> str:
    if raw is None:
        raise ApiError(400, "invalid_request", "user_code is required")
    code = device_flow.normalize(raw)
    if code is None:
        raise _wrong(request, ip)
    return code


async def lookup(
    request: web.Request, raw: str | None, user_id: str | None
) -> device_flow.CodeView:
    ip = _allowed_ip(request)
    code = _canonical(request, raw, ip)
    try:
        return await device_flow.lookup(code, user_id)
    except device_flow.UnknownCode:
        raise _wrong(request, ip) from None


async def decide(request: web.Request, raw: str | None, user_id: str, *, approve: bool) -> None:
    ip = _allowed_ip(request)
    code = _canonical(request, raw, ip)
    try:
        await device_flow.decide(code, user_id, approve=approve)
    except device_flow.UnknownCode:
        raise _wrong(request, ip) from None
    log.info("device_approved" if approve else "device_denied", user_id=user_id)
