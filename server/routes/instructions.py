"""Instructions (docs/api.md, Instructions): the user's own text ("about me / how to
answer"), ``GET``/``PUT /api/user/instructions``, and the rule every instruction text
follows, which ``PATCH /api/conversations/{id}`` applies to a conversation's.

Both texts are read by the conversation's actor for every generation (the store's
``instructions``), so a change here needs no word to any actor, in any process.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.clock import utcnow
from server.auth.current import require_user
from server.chat.request import NO_NUL, no_nul
from server.core.app_keys import REGISTRY, SETTINGS
from server.core.errors import ApiError
from server.http import api_models as wire
from server.http.bodies import read_model
from server.storage.tables import User

routes = web.RouteTableDef()

FIELD = "instructions"


def instruction_text(value: str | None, limit: int) -> str | None:
    """What is stored for ``value``: its text without surrounding whitespace, or ``None``
    (no instructions) for ``null``, ``""`` or blank text; ``400`` past ``limit``
    characters (``CERO_MAX_INSTRUCTIONS_CHARS``)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > limit:
        raise ApiError(
            400, "invalid_request", f"{FIELD}: at most {limit} characters", extra={"field": FIELD}
        )
    return text


class InstructionsBody(BaseModel):
    """``PUT /api/user/instructions``: the field is required; ``null`` or blank clears."""

    model_config = ConfigDict(extra="ignore", strict=True)
    instructions: str | None = Field(pattern=NO_NUL)

    @field_validator("instructions")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value)


async def _stored(user_id: str) -> str | None:
    row = await User.select(User.instructions).where(User.id == user_id).first().run()
    text = None if row is None else row["instructions"]
    return text if isinstance(text, str) else None


@routes.get("/api/user/instructions")
async def get_instructions(request: web.Request) -> web.Response:
    user = require_user(request)
    return wire.reply(wire.UserInstructions, {"instructions": await _stored(user.id)})


@routes.put("/api/user/instructions")
async def put_instructions(request: web.Request) -> web.Response:
    user = require_user(request)
    body = await read_model(request, InstructionsBody)
    text = instruction_text(body.instructions, request.app[SETTINGS].max_instructions_chars)
    await (
        User.update({User.instructions: text, User.updated_at: utcnow()})
        .where(User.id == user.id)
        .run()
    )
    request.app[REGISTRY].deps.store.instructions_changed()  # the next send sees them
    return wire.reply(wire.UserInstructions, {"instructions": text})
