"""Export and import (docs/api.md, "Export and import"): ``GET
/api/conversations/{id}/export`` and ``GET /api/export`` stream one conversation or the
whole account (JSON or Markdown); ``POST /api/import`` recreates the conversations of an
export file under the caller, with new ids, all or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import orjson
import structlog
from aiohttp import web

from actors.clock import utcnow
from server.auth.current import require_user
from server.chat.service import owned_conversation
from server.core.app_keys import SETTINGS
from server.core.errors import ApiError
from server.http import api_models as wire
from server.http.bodies import larger_body, read_limited
from server.storage.account_channel import ACCOUNT
from server.storage.exporting import (
    Format,
    account_conversations,
    export_chunks,
    filename,
    one_conversation,
)
from server.storage.importing import (
    ImportLimits,
    ImportTooLarge,
    InvalidImport,
    check,
    plan,
    write_import,
)

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

_MEDIA = {"json": "application/json", "markdown": "text/markdown"}


def _format(request: web.Request) -> Format:
    value = request.query.get("format", "json")
    if value == "json":
        return "json"
    if value == "markdown":
        return "markdown"
    raise ApiError(400, "invalid_request", "format: json or markdown", extra={"field": "format"})


@routes.get("/api/conversations/{id}/export")
async def export_conversation(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    fmt = _format(request)
    conversation = await owned_conversation(request.match_info["id"], user.id)
    now = utcnow()
    chunks = export_chunks(one_conversation(dict(conversation)), fmt, now, account=False)
    return await _stream(request, chunks, fmt, filename(fmt, now, str(conversation["id"])))


@routes.get("/api/export")
async def export_account(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    fmt = _format(request)
    now = utcnow()
    chunks = export_chunks(account_conversations(user.id), fmt, now, account=True)
    return await _stream(request, chunks, fmt, filename(fmt, now, None))


async def _stream(
    request: web.Request, chunks: AsyncGenerator[bytes, None], fmt: Format, name: str
) -> web.StreamResponse:
    """The first chunk is read before the answer starts, so a database that fails at once
    is an ordinary error answer (``503 not_ready``); a failure later cuts the connection
    without the chunked terminator, so no client takes a cut file for a whole one."""
    first = await anext(chunks)
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{_MEDIA[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    if request.version >= (1, 1):
        response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    except (ConnectionError, OSError):
        return response  # the client went away
    except Exception:
        log.exception("export_failed", path=request.path)
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()
    await response.write_eof()
    return response


@routes.post("/api/import")
@larger_body("max_import_bytes")
async def import_file(request: web.Request) -> web.Response:
    user = require_user(request)
    raw = await read_limited(request)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "Malformed JSON body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object")
    settings = request.app[SETTINGS]
    limits = ImportLimits(settings.max_import_conversations, settings.max_import_messages)
    try:
        export = check(data, limits)
    except InvalidImport as exc:
        raise ApiError(400, "invalid_import", str(exc), extra={"field": exc.path}) from None
    except ImportTooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc), extra={"field": exc.path}) from None
    del data, raw
    planned = plan(export, user.id, utcnow())
    await write_import(planned)
    channel = request.app[ACCOUNT]
    for row in planned.conversations:
        summary = {
            "id": row.id,
            "short_title": row.short_title,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
        await channel.conversation(user.id, "conversation.created", summary)
    log.info(
        "conversations_imported",
        user_id=user.id,
        conversations=len(planned.conversations),
        messages=len(planned.messages),
    )
    return wire.reply(
        wire.ImportResult,
        {
            "conversations": [
                {"id": c.id, "shortTitle": c.short_title, "importedFrom": c.imported_from}
                for c in planned.imported
            ]
        },
    )
