"""Attachments (docs/api.md, Attachments): ``POST /api/attachments`` (one file,
``multipart/form-data``, streamed to a private spool file and checked as it arrives),
``GET /api/attachments/{id}`` (its owner only) and ``GET …/{id}/thumbnail`` (images).

An upload is never held whole in memory: each chunk is hashed, sniffed
(:class:`~server.storage.attachment_types.Sniffer`), counted against the limits and
written to the spool file; only a complete, accepted file is given to the store and gets
a row. Whatever ends an upload early (a limit, a bad type, the client gone) removes the
spool file: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.parse

import structlog
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from server.auth.current import require_user
from server.core.app_keys import SETTINGS
from server.core.config import Settings
from server.core.errors import ApiError, not_found
from server.http import api_models as wire
from server.http.bodies import larger_body
from server.storage import attachments
from server.storage.attachment_blobs import read_all, spool
from server.storage.attachment_types import Sniffer, accepted, clean_name, is_image, is_text
from server.storage.attachments import BLOBS
from server.storage.thumbnails import NotAThumbnail, thumbnail

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

#: The form field that carries the file.
FIELD = "file"
#: Bytes read from the body at a time.
READ_BYTES = 256 << 10
#: What a download may do in a browser: nothing (no script, no plugin, no request).
SANDBOX_CSP = "sandbox; default-src 'none'"

#: user id → bytes received by this process's uploads in progress (counted in the quota).
_in_flight: dict[str, int] = {}


def _too_large(settings: Settings) -> ApiError:
    limit = settings.attachment_max_bytes
    return ApiError(
        413,
        "payload_too_large",
        f"file: larger than {limit} bytes (CERO_ATTACHMENT_MAX_BYTES)",
        extra={"field": FIELD, "limit": limit},
    )


def _over_quota(settings: Settings) -> ApiError:
    quota = settings.attachment_quota_bytes
    return ApiError(
        413,
        "quota_exceeded",
        f"file: your attachments would take more than {quota} bytes "
        "(CERO_ATTACHMENT_QUOTA_BYTES); delete conversations with attachments to make room",
        extra={"field": FIELD, "limit": quota},
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message, extra={"field": FIELD})


async def _file_part(request: web.Request) -> BodyPartReader:
    """The body's ``file`` part (other parts before it are skipped)."""
    if request.content_type != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "The body must be multipart/form-data with the file in a part named 'file'",
        )
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, BodyPartReader) and part.name == FIELD:
                return part
            await part.release()
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError):
        raise _bad_request("Malformed multipart body") from None
    raise _bad_request("file: the body has no part named 'file'")


@routes.post("/api/attachments")
@larger_body("attachment_body_limit", refusal=_too_large)
async def upload(request: web.Request) -> web.Response:
    user = require_user(request)
    settings = request.app[SETTINGS]
    count, used = await attachments.usage(user.id)
    if count >= settings.attachment_max_files:
        raise ApiError(
            413,
            "quota_exceeded",
            f"file: you keep {count} attachments already, the most allowed "
            "(CERO_ATTACHMENT_MAX_FILES)",
            extra={"field": FIELD, "limit": settings.attachment_max_files},
        )
    if used >= settings.attachment_quota_bytes:
        raise _over_quota(settings)
    part = await _file_part(request)
    name = clean_name(part.filename)
    blobs = request.app[BLOBS]
    fd, path = spool(blobs.spool_dir())
    digest = hashlib.sha256()
    sniffer = Sniffer()
    size = 0
    try:
        try:
            while chunk := await part.read_chunk(READ_BYTES):
                size += len(chunk)
                _in_flight[user.id] = _in_flight.get(user.id, 0) + len(chunk)
                if size > settings.attachment_max_bytes:
                    raise _too_large(settings)
                if used + _in_flight[user.id] > settings.attachment_quota_bytes:
                    raise _over_quota(settings)
                digest.update(chunk)
                sniffer.feed(chunk)
                os.write(fd, chunk)
        finally:
            left = _in_flight.get(user.id, 0) - size
            if left > 0:
                _in_flight[user.id] = left
            else:
                _in_flight.pop(user.id, None)
        os.close(fd)
        fd = -1
        if size == 0:
            raise _bad_request("file: the file is empty")
        mime_type = sniffer.mime_type(name)
        if not accepted(mime_type, settings.attachment_types):
            what = (
                "the content is neither a known format nor UTF-8 text"
                if mime_type is None
                else f"{mime_type} (by its content) is not accepted"
            )
            raise ApiError(
                415,
                "unsupported_media_type",
                f"file: {what}; CERO_ATTACHMENT_TYPES: {', '.join(settings.attachment_types)}",
                extra={"field": FIELD, "accepted": list(settings.attachment_types)},
            )
        assert mime_type is not None
        sha256 = digest.hexdigest()
        await blobs.put(sha256, path)
        row = await attachments.create(user.id, name, mime_type, size, sha256)
    finally:
        if fd >= 0:
            os.close(fd)
        await asyncio.to_thread(path.unlink, missing_ok=True)
    log.info("attachment_uploaded", attachment_id=row["id"], size=size, mime_type=mime_type)
    return wire.reply(wire.Uploaded, {"attachment": attachments.attachment_json(row)}, status=201)


def _disposition(kind: str, name: str) -> str:
    """``kind; filename="ascii"; filename*=UTF-8''percent-encoded`` (RFC 6266)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    encoded = urllib.parse.quote(name, safe="")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


async def _owned(request: web.Request) -> dict[str, object]:
    user = require_user(request)
    row = await attachments.owned(request.match_info["id"], user.id)
    if row is None:
        raise not_found("Attachment not found")
    return row


@routes.get("/api/attachments/{id}")
async def download(request: web.Request) -> web.StreamResponse:
    row = await _owned(request)
    mime_type = str(row["mime_type"])
    name = str(row["name"])
    sha256 = str(row["sha256"])
    blobs = request.app[BLOBS]
    chunks = blobs.read(sha256)
    try:
        first = await anext(aiter(chunks))
    except (FileNotFoundError, StopAsyncIteration):
        raise not_found("Attachment not found") from None
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: f"{mime_type}; charset=utf-8" if is_text(mime_type) else mime_type,
            hdrs.CONTENT_LENGTH: str(row["size"]),
            hdrs.CONTENT_DISPOSITION: _disposition(
                "inline" if is_image(mime_type) else "attachment", name
            ),
            hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
            hdrs.CONTENT_SECURITY_POLICY: SANDBOX_CSP,
            hdrs.CACHE_CONTROL: "private, max-age=86400",
            hdrs.ETAG: f'"{sha256}"',
        }
    )
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response


@routes.get("/api/attachments/{id}/thumbnail")
async def thumbnail_view(request: web.Request) -> web.Response:
    row = await _owned(request)
    if not is_image(str(row["mime_type"])):
        raise ApiError(
            415, "unsupported_media_type", "Only images have thumbnails", extra={"field": "id"}
        )
    blobs = request.app[BLOBS]
    try:
        data = await read_all(blobs, str(row["sha256"]))
    except FileNotFoundError:
        raise not_found("Attachment not found") from None
    try:
        body, mime_type = await thumbnail(data)
    except NotAThumbnail as exc:
        raise ApiError(
            422, "unprocessable_image", f"No thumbnail: the image cannot be decoded safely ({exc})"
        ) from None
    return web.Response(
        body=body,
        headers={
            hdrs.CONTENT_TYPE: mime_type,
            hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
            hdrs.CONTENT_SECURITY_POLICY: SANDBOX_CSP,
            hdrs.CACHE_CONTROL: "private, max-age=86400",
        },
    )
