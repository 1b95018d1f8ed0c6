"""Attachments as Gemini parts: small ones inline (``inline_data``, base64 in the request
body), the rest through the Files API (uploaded once, then ``file_data`` by its URI).

Gemini refuses a request body past about 20 MB; base64 makes inline bytes a third larger,
so the attachments of one request go inline only while their sum stays within
``inline_max_bytes`` (``CERO_GEMINI_INLINE_MAX_BYTES``, 14 MiB), in the order sent. An
uploaded file is remembered by attachment id for :data:`FILE_TTL_S` (Gemini keeps one for
48 hours), so a later turn that still sends it does not upload it again.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

from google import genai
from google.genai import types

from actors.models.base import Attachment, ModelError, ModelRequest

#: How long an uploaded file is used again (Gemini deletes it after 48 hours).
FILE_TTL_S = 46 * 3600.0
#: Files remembered at most (the oldest are forgotten first).
REMEMBERED_FILES = 10_000


class GeminiFiles:
    def __init__(self, inline_max_bytes: int) -> None:
        self.inline_max_bytes = inline_max_bytes
        #: attachment id → (file URI, when uploaded)
        self._uploaded: dict[str, tuple[str, float]] = {}

    def _plan(self, request: ModelRequest) -> tuple[set[str], list[Attachment]]:
        """Which attachments go inline, and which through the Files API."""
        inline: set[str] = set()
        upload: list[Attachment] = []
        budget = self.inline_max_bytes
        for turn in request.contents:
            for attachment in turn.attachments:
                if attachment.id not in request.attachment_data:
                    continue
                if attachment.size <= budget:
                    inline.add(attachment.id)
                    budget -= attachment.size
                else:
                    upload.append(attachment)
        return inline, upload

    async def parts(self, client: genai.Client, request: ModelRequest) -> dict[str, Any]:
        """attachment id → its part (inline, or a file uploaded now or before)."""
        inline, upload = self._plan(request)
        out: dict[str, Any] = {}
        data = request.attachment_data
        for turn in request.contents:
            for a in turn.attachments:
                if a.id in inline:
                    out[a.id] = types.Part(
                        inline_data=types.Blob(mime_type=a.mime_type, data=data[a.id])
                    )
        now = time.monotonic()
        for a in upload:
            known = self._uploaded.get(a.id)
            if known is None or now - known[1] > FILE_TTL_S:
                uri = await self._upload(client, a, data[a.id])
                if len(self._uploaded) >= REMEMBERED_FILES:
                    self._uploaded.pop(next(iter(self._uploaded)))
                self._uploaded[a.id] = known = (uri, now)
            out[a.id] = types.Part(
                file_data=types.FileData(file_uri=known[0], mime_type=a.mime_type)
            )
        return out

    @staticmethod
    async def _upload(client: genai.Client, attachment: Attachment, data: bytes) -> str:
        try:
            uploaded = await client.aio.files.upload(
                file=io.BytesIO(data),
                config=types.UploadFileConfig(
                    mime_type=attachment.mime_type, display_name=attachment.name[:512]
                ),
            )
        except Exception as exc:
            raise ModelError(
                "upstream_unavailable", f"could not upload {attachment.name!r} to Gemini: {exc}"
            ) from exc
        if not uploaded.uri:
            raise ModelError("upstream_unavailable", "Gemini's Files API returned no file URI")
        return uploaded.uri


def with_parts(turn_parts: list[Any], attachments: Any, parts: Mapping[str, Any]) -> list[Any]:
    """A turn's text part followed by its attachments' parts (those sent)."""
    return turn_parts + [parts[a.id] for a in attachments if a.id in parts]
