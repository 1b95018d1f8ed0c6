"""``GET /api/user/whoami``: the signed-in user."""

from __future__ import annotations

from aiohttp import web

from server.auth.current import require_user
from server.http import api_models as wire

routes = web.RouteTableDef()


@routes.get("/api/user/whoami")
async def whoami(request: web.Request) -> web.Response:
    user = require_user(request)
    return wire.reply(
        wire.WhoAmI,
        {"user": {"id": user.id, "name": user.name, "email": user.email, "image": user.image}},
    )
