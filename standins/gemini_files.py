"""The Gemini stand-in's attachments: the Files API's resumable upload, as google-genai
speaks it, and the check of every ``inlineData`` / ``fileData`` part a request carries.

Upload (``client.aio.files.upload``): ``POST /upload/v1beta/files`` with
``X-Goog-Upload-Protocol: resumable`` and ``X-Goog-Upload-Command: start`` and the file's
metadata answers an ``X-Goog-Upload-URL``; the bytes follow in ``POST``s to it, each with
``X-Goog-Upload-Command: upload`` (the last ``upload, finalize``) and its
``X-Goog-Upload-Offset``, answered ``X-Goog-Upload-Status: active`` then ``final`` with
``{"file": {name, uri, mimeType, sizeBytes, state}}``.

Parts: an ``inlineData`` needs a ``mimeType`` and base64 ``data``; a ``fileData`` a
``fileUri`` of a file uploaded here (each field by its JSON or its proto name, as
Gemini's proto3 JSON parser takes either). Anything else answers ``400 INVALID_ARGUMENT``, as
Gemini does. :meth:`FakeFiles.received` gives a request's attachments back as
``(mimeType, bytes, how)`` for the tests' assertions.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web


@dataclass
class StoredFile:
    name: str
    mime_type: str
    display_name: str
    size: int
    data: bytearray = field(default_factory=bytearray)
    final: bool = False


@dataclass(frozen=True)
class ReceivedPart:
    mime_type: str
    data: bytes
    how: Literal["inline", "file"]


class PartError(Exception):
    """A part Gemini would refuse: the message of its ``400``."""


class FakeFiles:
    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}  # "files/<id>" → the file
        self._sessions: dict[str, StoredFile] = {}  # upload session id → its file
        self.base_url = ""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(r"/upload/{version:v1|v1beta}/files", self._start)
        app.router.add_post("/upload-session/{session}", self._chunk)

    def _json(self, file: StoredFile) -> dict[str, Any]:
        return {
            "name": file.name,
            "displayName": file.display_name,
            "mimeType": file.mime_type,
            "sizeBytes": str(file.size),
            "uri": f"{self.base_url}/v1beta/{file.name}",
            "state": "ACTIVE",
        }

    async def _start(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Goog-Upload-Command", "").lower() != "start":
            return _error("X-Goog-Upload-Command: start expected")
        body = await request.json()
        meta = body.get("file") if isinstance(body, Mapping) else None
        meta = meta if isinstance(meta, Mapping) else {}
        mime_type = str(
            meta.get("mimeType") or request.headers.get("X-Goog-Upload-Header-Content-Type", "")
        )
        if not mime_type:
            return _error("mimeType is required")
        name = f"files/{secrets.token_hex(6)}"
        size = int(
            request.headers.get("X-Goog-Upload-Header-Content-Length") or meta.get("sizeBytes") or 0
        )
        file = StoredFile(name, mime_type, str(meta.get("displayName") or ""), size)
        session = secrets.token_hex(8)
        self._sessions[session] = file
        return web.json_response(
            {}, headers={"X-Goog-Upload-URL": f"{self.base_url}/upload-session/{session}"}
        )

    async def _chunk(self, request: web.Request) -> web.Response:
        file = self._sessions.get(request.match_info["session"])
        if file is None:
            return _error("unknown upload session", 404)
        offset = int(request.headers.get("X-Goog-Upload-Offset", "-1"))
        if offset != len(file.data):
            return _error(f"offset {offset}, expected {len(file.data)}")
        file.data += await request.read()
        command = request.headers.get("X-Goog-Upload-Command", "")
        if "finalize" not in command:
            return web.json_response({}, headers={"X-Goog-Upload-Status": "active"})
        file.final = True
        file.size = len(file.data)
        self._sessions.pop(request.match_info["session"], None)
        self.files[file.name] = file
        return web.json_response(
            {"file": self._json(file)}, headers={"X-Goog-Upload-Status": "final"}
        )

    def check(self, body: Mapping[str, Any]) -> None:
        """Raise :class:`PartError` for a part Gemini would refuse."""
        self.received(body)

    def received(self, body: Mapping[str, Any]) -> list[ReceivedPart]:
        """Every attachment part of a request's ``contents``, in order."""
        out: list[ReceivedPart] = []
        contents = body.get("contents")
        for content in contents if isinstance(contents, list) else ():
            parts = content.get("parts") if isinstance(content, Mapping) else None
            for part in parts if isinstance(parts, list) else ():
                if not isinstance(part, Mapping):
                    continue
                if "inlineData" in part:
                    out.append(_inline(part["inlineData"]))
                elif "fileData" in part:
                    out.append(self._file(part["fileData"]))
        return out

    def _file(self, value: object) -> ReceivedPart:
        if not isinstance(value, Mapping):
            raise PartError("fileData must be an object")
        uri = _field(value, "fileUri")
        if not isinstance(uri, str):
            raise PartError("fileData.fileUri is required")
        name = "files/" + uri.rsplit("/files/", 1)[-1] if "/files/" in uri else uri
        file = self.files.get(name)
        if file is None or not file.final:
            raise PartError(f"File {name} not found or not ACTIVE")
        mime_type = str(_field(value, "mimeType") or file.mime_type)
        return ReceivedPart(mime_type, bytes(file.data), "file")


def _inline(value: object) -> ReceivedPart:
    if not isinstance(value, Mapping):
        raise PartError("inlineData must be an object")
    mime_type, data = _field(value, "mimeType"), value.get("data")
    if not isinstance(mime_type, str) or not mime_type:
        raise PartError("inlineData.mimeType is required")
    if not isinstance(data, str):
        raise PartError("inlineData.data is required")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(data)
        except (binascii.Error, ValueError):
            raise PartError("inlineData.data is not base64") from None
    return ReceivedPart(mime_type, raw, "inline")


def _field(value: Mapping[str, Any], name: str) -> Any:
    """A field by its JSON name or its proto name (``mimeType`` or ``mime_type``): Gemini
    parses request bodies as proto3 JSON, which accepts both, and google-genai 3.6 sends
    the second inside ``inlineData``."""
    if name in value:
        return value[name]
    return value.get("".join("_" + c.lower() if c.isupper() else c for c in name))


def _error(message: str, status: int = 400) -> web.Response:
    name = "NOT_FOUND" if status == 404 else "INVALID_ARGUMENT"
    return web.json_response(
        {"error": {"code": status, "message": message, "status": name}}, status=status
    )
