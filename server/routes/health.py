"""Liveness, readiness and the root probe."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from server import db
from server.errors import error_response, json_response
from server.state import ENGINE

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

READY_TIMEOUT_S = 3.0


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(db.ping(request.app[ENGINE]), READY_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready", with the reason
        reason = f"database: {type(exc).__name__}: {exc}"[:300]
        log.warning("not_ready", reason=reason)
        return error_response(request, 503, "not_ready", reason)
    return json_response({"status": "ok", "database": "ok"})
