"""Request bodies of the OAuth-style endpoints: JSON or form-encoded, one flat object.

Every failure is ``400 invalid_request`` naming the problem (RFC 6749 §5.2): malformed
JSON, a non-object body, a repeated form field, a wrong type. Empty strings count as absent
(as in Better Auth).
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, field_validator

from server.core.errors import ApiError
from server.http.bodies import FORM_TYPES, read_form, read_object, validate

M = TypeVar("M", bound=BaseModel)


class OAuthBody(BaseModel):
    """Base: extra fields ignored, ``""`` → ``None``."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: object) -> object:
        return None if value == "" else value


async def read_oauth(request: web.Request, model: type[M]) -> M:
    if request.content_type in FORM_TYPES:
        form = await read_form(request)
        keys = [key for key, _ in form.items()]
        if len(keys) != len(set(keys)):
            raise ApiError(400, "invalid_request", "A form field is repeated")
    try:
        data = await read_object(request, allow_form=True)
    except ApiError as exc:
        if exc.code == "invalid_json":
            raise ApiError(400, "invalid_request", exc.message) from None
        raise
    return validate(model, data, code="invalid_request")
