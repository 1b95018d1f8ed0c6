"""Preferences (docs/api.md, Preferences): choices the web page and the CLI remember per
user, not per device: the tools to offer checked (``tools``) and the model to start with
(``aiModel``). ``GET``/``PUT /api/user/preferences``; stored as JSON in
``cero_user.preferences``.

Only a default for the clients: a chat turn still names its own model and tools, and this
server never applies a preference to a turn by itself.
"""

from __future__ import annotations

import json
from typing import Literal, get_args

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.clock import utcnow
from actors.models.catalog import KNOWN_TOOLS
from server.auth.current import require_user
from server.chat.request import NO_NUL, no_nul
from server.core.app_keys import CATALOG
from server.core.errors import ApiError
from server.http import api_models as wire
from server.http.bodies import read_model
from server.storage.tables import User

routes = web.RouteTableDef()

ToolName = Literal["google_search", "url_context", "code_execution"]
assert set(get_args(ToolName)) == set(KNOWN_TOOLS), "ToolName must list the catalog's tools"

#: What ``GET`` answers before anything was saved.
NONE_SAVED: dict[str, object] = {"tools": [], "aiModel": None}


class PreferencesBody(BaseModel):
    """``PUT /api/user/preferences``: the whole preferences (a field left out is reset)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    tools: list[ToolName] = Field(max_length=len(KNOWN_TOOLS) * 2)
    aiModel: str | None = Field(default=None, max_length=128, pattern=NO_NUL)

    @field_validator("aiModel")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value)


def _shape(raw: object) -> dict[str, object]:
    """The stored value as the wire has it (a row may hold JSON text or a decoded value)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return dict(NONE_SAVED)
    if not isinstance(raw, dict):
        return dict(NONE_SAVED)
    tools = raw.get("tools")
    model = raw.get("aiModel")
    return {
        "tools": [t for t in tools if t in KNOWN_TOOLS] if isinstance(tools, list) else [],
        "aiModel": model if isinstance(model, str) else None,
    }


@routes.get("/api/user/preferences")
async def get_preferences(request: web.Request) -> web.Response:
    user = require_user(request)
    row = await User.select(User.preferences).where(User.id == user.id).first().run()
    return wire.reply(wire.UserPreferences, _shape(None if row is None else row["preferences"]))


@routes.put("/api/user/preferences")
async def put_preferences(request: web.Request) -> web.Response:
    user = require_user(request)
    body = await read_model(request, PreferencesBody)
    model = body.aiModel.removeprefix("models/") if body.aiModel else None
    if model is not None and request.app[CATALOG].get(model) is None:
        raise ApiError(
            400,
            "invalid_request",
            f"aiModel: unknown model '{model}'; see GET /api/models",
            extra={"field": "aiModel"},
        )
    stored: dict[str, object] = {"tools": list(dict.fromkeys(body.tools)), "aiModel": model}
    await (
        User.update({User.preferences: json.dumps(stored), User.updated_at: utcnow()})
        .where(User.id == user.id)
        .run()
    )
    return wire.reply(wire.UserPreferences, stored)
