"""Request bodies: JSON (or form, for OAuth endpoints) validated into pydantic models.

Malformed JSON, wrong types and missing fields become ``400`` naming the field; a body
over the limit becomes ``413`` (aiohttp raises it while reading; the middleware renders it).
"""

from __future__ import annotations

import functools
import zlib
from typing import TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from pydantic import BaseModel, ValidationError

from server.core.errors import ApiError
from server.core.validation import first_error
from server.http.nul_guard import first_nul, refused

M = TypeVar("M", bound=BaseModel)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

FormData = MultiDictProxy[str | bytes | bytearray | web.FileField]
# What aiohttp's form parser raises on a malformed body (a too-large body is an
# HTTPException, not one of these, and keeps its 413).
_MALFORMED = (
    ValueError,  # bad bytes for the charset (UnicodeDecodeError), bad boundary, ...
    LookupError,  # unknown charset
    AssertionError,
    RuntimeError,  # unknown part encoding
    TypeError,
    HttpProcessingError,  # bad part headers
    zlib.error,
)


async def read_form(request: web.Request) -> FormData:
    """The form fields; a body aiohttp cannot parse (unknown charset, bytes that are not
    in it, multipart without or with a wrong boundary) is ``400``, never a crash."""
    try:
        form = await request.post()
    except _MALFORMED:
        raise ApiError(400, "invalid_request", "Malformed form body") from None
    return form


async def read_object(request: web.Request, *, allow_form: bool = False) -> dict[str, object]:
    """The request body as a JSON object (or form fields when ``allow_form``). A field the
    route reads holding U+0000 is ``400`` naming it (:func:`validate`, server.http.nul_guard)."""
    if allow_form and request.content_type in FORM_TYPES:
        form = await read_form(request)
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "Malformed JSON body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object")
    return data


def validate(model: type[M], data: dict[str, object], *, code: str = "invalid_request") -> M:
    # Only the fields the model reads: an ignored one reaches no database.
    holding_nul = first_nul({key: data[key] for key in _field_names(model) if key in data})
    if holding_nul is not None:
        raise refused(holding_nul)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, message = first_error(exc, "body")
        raise ApiError(400, code, f"{field}: {message}", extra={"field": field}) from None


@functools.cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    """The body keys ``model`` reads: each field's name and its alias."""
    names = set(model.model_fields)
    names.update(f.alias for f in model.model_fields.values() if f.alias)
    names.update(
        str(f.validation_alias)
        for f in model.model_fields.values()
        if isinstance(f.validation_alias, str)
    )
    return frozenset(names)


async def read_model(
    request: web.Request, model: type[M], *, allow_form: bool = False, code: str = "invalid_request"
) -> M:
    return validate(model, await read_object(request, allow_form=allow_form), code=code)
