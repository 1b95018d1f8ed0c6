"""Export and import (docs/api.md, "Export and import"): ``GET
/api/conversations/{id}/export`` and ``GET /api/export`` stream one conversation or the
whole account (JSON or Markdown, attachments' bytes included in the JSON); ``POST
/api/import`` recreates the conversations of an export file under the caller, with new
ids, attachments included, all or nothing (files stored before a failure are removed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import orjson
import structlog
from aiohttp import web

from actors.clock import utcnow
from server.auth.current import require_user
from server.chat.service import owned_conversation
from server.core.app_keys import SETTINGS
from server.core.config import Settings
from server.core.errors import ApiError
from server.http import api_models as wire
from server.http.bodies import larger_body, read_limited
from server.storage.account_channel import ACCOUNT
from server.storage.attachments import BLOBS
from server.storage.exporting import (
    Format,
    account_conversations,
    export_chunks,
    filename,
    one_conversation,
)
from server.storage.import_attachments import ImportedFiles, Quota, check_quota
from server.storage.importing import (
    ImportLimits,
    ImportTooLarge,
    InvalidImport,
    check,
    new_files,
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
    chunks = export_chunks(
        one_conversation(dict(conversation)), fmt, now, account=False, blobs=request.app[BLOBS]
    )
    return await _stream(request, chunks, fmt, filename(fmt, now, str(conversation["id"])))


@routes.get("/api/export")
async def export_account(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    fmt = _format(request)
    now = utcnow()
    chunks = export_chunks(
        account_conversations(user.id), fmt, now, account=True, blobs=request.app[BLOBS]
    )
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


def _import_too_large(settings: Settings) -> ApiError:
    limit = settings.max_import_bytes
    return ApiError(
        413,
        "payload_too_large",
        f"body: larger than {limit} bytes (CERO_MAX_IMPORT_BYTES); split the file "
        "(export conversations one at a time)",
        extra={"limit": limit},
    )


def _refused(exc: InvalidImport | ImportTooLarge) -> ApiError:
    if isinstance(exc, InvalidImport):
        return ApiError(400, "invalid_import", str(exc), extra={"field": exc.path})
    extra: dict[str, object] = {"field": exc.path}
    if exc.limit is not None:
        extra["limit"] = exc.limit
    return ApiError(413, exc.code, str(exc), extra=extra)


@routes.post("/api/import")
@larger_body("max_import_bytes", refusal=_import_too_large)
async def import_file(request: web.Request) -> web.Response:
    user = require_user(request)
    raw = await read_limited(request)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "Malformed JSON body") from None
    del raw
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object")
    settings = request.app[SETTINGS]
    limits = ImportLimits(
        settings.max_import_conversations,
        settings.max_import_messages,
        settings.attachment_max_bytes,
    )
    try:
        export = check(data, limits)
    except (InvalidImport, ImportTooLarge) as exc:
        raise _refused(exc) from None
    del data
    files = new_files(export)
    quota = Quota(settings.attachment_max_files, settings.attachment_quota_bytes)
    stored = ImportedFiles(request.app[BLOBS], settings.attachment_types)
    written = False
    try:
        await check_quota(user.id, files, quota)
        await stored.store_all(files)
        planned = plan(export, user.id, utcnow(), stored.stored)
        del export, files
        await write_import(planned)
        written = True
    except (InvalidImport, ImportTooLarge) as exc:
        raise _refused(exc) from None
    finally:
        if not written:
            # Shielded: a client gone mid-import still leaves no file behind.
            await asyncio.shield(stored.discard())
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
        attachments=len(planned.attachments),
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
