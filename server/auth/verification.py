"""The signed-in user's side of the device flow, shared by the JSON API and the /device page:
user-code lookups and decisions, with wrong codes counted per client IP (5 / 10 min → 429).

Each lookup holds a slot of its IP's budget from before its database query until its
answer is known, so parallel guesses get no more tries than sequential ones; a lookup that
finds the budget held only by lookups in progress waits for them rather than being refused,
so only decided wrong codes ever lead to a 429.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from server.auth import device_flow
from server.core.client_ip import client_ip
from server.core.errors import ApiError
from server.limits.rate_limit import rate_key
from server.limits.refusals import as_api_errors
from server.ops.metrics import METRICS
from state.wrong_codes import WrongCodes

log = structlog.get_logger(__name__)

#: Wrong user codes per address (memory; Redis in cluster mode: :mod:`server.cluster_mode`).
LIMITER: web.AppKey[WrongCodes] = web.AppKey("auth_wrong_codes")


@dataclass(slots=True)
class _Slot:
    ip: str
    key: str
    wrong: bool = False


@asynccontextmanager
async def _slot(request: web.Request) -> AsyncIterator[_Slot]:
    """One reserved lookup for the client's IP, or ``429`` with ``Retry-After``."""
    limiter = request.app[LIMITER]
    ip = client_ip(request)
    slot = _Slot(ip=ip, key=rate_key(ip))
    with as_api_errors():
        retry = await limiter.acquire(slot.key)
    if retry is not None:
        request.app[METRICS].limit_refusals_by("wrong_codes")
        raise ApiError(
            429,
            "rate_limited",
            "Too many wrong codes; try again later",
            headers={"Retry-After": str(retry)},
        )
    try:
        yield slot
    finally:
        await limiter.finish(slot.key, wrong=slot.wrong)


def _wrong(request: web.Request, slot: _Slot) -> device_flow.UnknownCode:
    slot.wrong = True  # counted as the slot is given back
    log.info("device_wrong_code", ip=slot.ip)
    return device_flow.UnknownCode()


def _canonical(request: web.Request, raw: str | None, slot: _Slot) -> str:
    if raw is None:
        raise ApiError(400, "invalid_request", "user_code is required")
    code = device_flow.normalize(raw)
    if code is None:
        raise _wrong(request, slot)
    return code


async def lookup(
    request: web.Request, raw: str | None, user_id: str | None
) -> device_flow.CodeView:
    async with _slot(request) as slot:
        code = _canonical(request, raw, slot)
        try:
            return await device_flow.lookup(code, user_id)
        except device_flow.UnknownCode:
            raise _wrong(request, slot) from None


async def decide(request: web.Request, raw: str | None, user_id: str, *, approve: bool) -> None:
    async with _slot(request) as slot:
        code = _canonical(request, raw, slot)
        try:
            await device_flow.decide(code, user_id, approve=approve)
        except device_flow.UnknownCode:
            raise _wrong(request, slot) from None
    log.info("device_approved" if approve else "device_denied", user_id=user_id)
