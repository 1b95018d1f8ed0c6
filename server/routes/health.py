"""Liveness, readiness and the root probe."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from actors.error_text import READY_TEXT
from cluster.faults import REDIS_FAULTS
from server.core.app_keys import REDIS_HEALTH, REGISTRY, SETTINGS
from server.core.errors import error_response
from server.http import api_models as wire
from server.limits.admission import ADMISSION
from server.storage import db
from server.storage.batch_writer import WRITER
from server.storage.db import ENGINE

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

READY_TIMEOUT_S = 3.0
#: Readiness waits this long at most for a write to be taken (a held lock fails sooner).
READY_WRITE_TIMEOUT_S = 2.0


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    return wire.reply(wire.Status, {"status": "ok"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return wire.reply(wire.Status, {"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    registry = request.app.get(REGISTRY)
    if registry is not None and registry.draining:
        # At once on SIGTERM, so a load balancer sends nothing new here.
        return _not_ready(request, "draining")
    try:
        # Answering a SELECT is not enough: a database whose write lock is held answers
        # reads while every chat and sign-in waits. Readiness needs a write taken.
        engine = request.app[ENGINE]
        await asyncio.wait_for(db.ping(engine), READY_TIMEOUT_S)
        timeout = min(READY_WRITE_TIMEOUT_S, request.app[SETTINGS].db_write_timeout)
        await asyncio.wait_for(db.check_writes(engine, request.app.get(WRITER)), timeout)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        return _not_ready(request, "database", exc)
    health = request.app.get(REDIS_HEALTH)
    if health is not None:
        # The process's own client (its pool), not a new connection per probe; a failed
        # ping also marks Redis down for the sends (server.limits.refusals.require_redis).
        try:
            await health.check()
            checks["redis"] = "ok"
        except REDIS_FAULTS as exc:
            return _not_ready(request, "redis", exc)
    admission = request.app.get(ADMISSION)
    detail: dict[str, object] = {"status": "ok", **checks}
    if admission is not None:
        # What admission control sees (server/limits/admission.py): ready does not mean idle.
        detail["admission"] = {
            "running": admission.running,
            "queued": admission.queued,
            "floor": admission.limits.floor,
            "cpu": round(admission.cpu, 3),
            "loopLag": round(admission.lag, 4),
            "saturated": admission.saturated,
        }
    return wire.reply(wire.Status, detail)


def _not_ready(request: web.Request, check: str, exc: BaseException | None = None) -> web.Response:
    """503 naming the check that failed (a fixed sentence: no address, no exception text,
    which help only an attacker); the exception is logged with the request id."""
    detail = None if exc is None else f"{type(exc).__name__}: {exc}"[:300]
    log.warning("not_ready", check=check, detail=detail)
    return error_response(request, 503, "not_ready", READY_TEXT[check])
