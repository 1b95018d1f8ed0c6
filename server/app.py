"""The aiohttp application: ``create_app(settings)`` wires state, middlewares and routes.

Resources that start and stop together live in ``cleanup_ctx``: the database engine
(migrations, then the asyncpg pool) and the actor registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from server import auth
from server.auth.middleware import auth_middleware
from server.chat.runtime import chat_runtime, stop_actors
from server.cluster_mode.redis_client import redis_client
from server.cluster_mode.shared_state import shared_state
from server.core.app_keys import SETTINGS
from server.core.config import Settings
from server.http import security_headers
from server.http.middleware import error_middleware, request_id_middleware
from server.http.nul_guard import nul_guard_middleware
from server.http.protocol import capacity_middleware
from server.limits import stream_limits
from server.ops.metrics import METRICS, Metrics, metrics_middleware, metrics_view
from server.routes import (
    account,
    attachments,
    branches,
    chat,
    conversations,
    export,
    health,
    instructions,
    preferences,
    user,
)
from server.routes.openapi import openapi_view
from server.routes.search import routes as search_routes
from server.storage import db
from server.storage.attachments import attachment_store
from server.storage.db import ENGINE
from server.transports import liveness, replay_budget, ws
from server.web import app_page, device_page

log = structlog.get_logger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        # Metrics outside the error renderer: every response is counted, errors included.
        middlewares=[
            request_id_middleware,
            capacity_middleware,
            metrics_middleware,
            error_middleware,
            auth_middleware,
            nul_guard_middleware,  # U+0000 in the URL: never sent to the database
        ],
        client_max_size=settings.max_body,
    )
    app[SETTINGS] = settings
    app[ENGINE] = db.bound_engine()  # bound once where the process starts
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(redis_client)  # cluster mode only (CERO_REDIS_URL)
    app.cleanup_ctx.append(attachment_store)  # where attachments' bytes are kept
    app.cleanup_ctx.append(chat_runtime)
    app.cleanup_ctx.append(shared_state)  # cluster mode: limits and revocations in Redis
    # Generations end (server_shutdown) and live streams close while the database is open.
    app.on_shutdown.append(stop_actors)
    security_headers.setup(app)  # CSP, nosniff, Referrer-Policy, HSTS behind https
    app.add_routes(health.routes)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/openapi.json", openapi_view)
    auth.setup(app)
    app.add_routes(user.routes)
    app.add_routes(instructions.routes)
    app.add_routes(preferences.routes)
    app.add_routes(device_page.routes)
    app.add_routes(app_page.routes)
    stream_limits.setup(app)  # WebSockets and event streams per user and per address
    liveness.setup(app)  # live streams and sockets end with their session
    replay_budget.setup(app)  # bytes of replay per WebSocket, and per user for SSE
    app.add_routes(chat.routes)
    app.add_routes(conversations.routes)
    app.add_routes(branches.routes)
    app.add_routes(export.routes)  # export and import (docs/api.md)
    app.add_routes(search_routes)  # GET /api/search
    app.add_routes(account.routes)  # GET /api/account/events
    app.add_routes(attachments.routes)  # upload, download, thumbnail
    ws.setup(app)  # after stop_actors: sockets close once generations have ended
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await db.start_pool(engine, app[SETTINGS].db_pool_size)
    try:
        await db.migrate(engine)
        yield
    finally:
        await db.close_pool(engine)
