"""Request bodies: JSON (or form, for OAuth endpoints) validated into pydantic models.

Malformed JSON, wrong types and missing fields become ``400`` naming the field; a body
over the limit becomes ``413`` (aiohttp raises it while reading; the middleware renders it).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from typing import TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from pydantic import BaseModel, ValidationError

from server.core.app_keys import SETTINGS
from server.core.config import Settings
from server.core.errors import ApiError
from server.core.validation import first_error
from server.http.nul_guard import first_nul, refused

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[..., object])

#: The attribute :func:`larger_body` sets on a handler: the name of the setting that is its
#: body limit instead of ``CERO_MAX_BODY``.
_BODY_LIMIT = "cero_body_limit"

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


# -- a larger body for one route ---------------------------------------------------------


#: The attribute :func:`larger_body` sets when the route words its own ``413``.
_BODY_REFUSAL = "cero_body_refusal"


def larger_body(
    setting: str, refusal: Callable[[Settings], ApiError] | None = None
) -> Callable[[H], H]:
    """Mark a handler whose body limit is the setting ``setting`` (a field of
    :class:`~server.core.config.Settings`) instead of ``CERO_MAX_BODY``: the error
    middleware's ``Content-Length`` check honours it, and the handler reads its body with
    :func:`read_limited` (aiohttp's own ``client_max_size`` stays ``CERO_MAX_BODY`` for
    every other route). ``refusal``: the route's own ``413`` for a body over it (one that
    names the limit the route's users know), instead of the generic one."""

    def mark(handler: H) -> H:
        setattr(handler, _BODY_LIMIT, setting)
        if refusal is not None:
            setattr(handler, _BODY_REFUSAL, refusal)
        return handler

    return mark


def body_limit(request: web.Request) -> int:
    """The body limit of the route ``request`` matched, in bytes."""
    settings = request.app[SETTINGS]
    setting = getattr(request.match_info.handler, _BODY_LIMIT, None)
    return int(getattr(settings, setting)) if isinstance(setting, str) else settings.max_body


def too_large(request: web.Request) -> ApiError:
    """The ``413`` for a body past the route's :func:`body_limit`."""
    refusal = getattr(request.match_info.handler, _BODY_REFUSAL, None)
    if refusal is not None:
        answer: ApiError = refusal(request.app[SETTINGS])
        return answer
    return ApiError(413, "payload_too_large", f"Body larger than {body_limit(request)} bytes")


async def read_limited(request: web.Request) -> bytes:
    """The whole body, up to the route's :func:`body_limit`; past it ``413
    payload_too_large`` (a ``Content-Length`` over it is refused by the middleware before
    the handler runs; a chunked body is counted as it arrives)."""
    limit = body_limit(request)
    received = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        received += chunk
        if len(received) > limit:
            raise too_large(request)
    return bytes(received)
