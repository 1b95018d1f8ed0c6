"""``GET /api/search``: full-text search over the signed-in user's own messages and
conversation titles (docs/api.md, Search). Reading the request (``q``, ``limit``, the
opaque cursor) and shaping the answer; the queries are ``server/storage/search.py``'s."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from actors.clock import iso
from server.auth.current import require_user
from server.core.errors import ApiError
from server.http import api_models as wire
from server.storage.search import Hit, search

routes = web.RouteTableDef()

DEFAULT_LIMIT = 20
MAX_LIMIT = 50
#: ``q``'s length after trimming.
MAX_QUERY = 200
#: The spaces trimmed around ``q``: ECMAScript's ``\s``, which the OpenAPI pattern below
#: means (Python's ``str.strip()`` differs: it also strips U+001C–U+001F and U+0085, and
#: keeps U+FEFF), so the document and the server agree on every text. As a regex class
#: body (JSON Schema's ``pattern`` is ECMAScript; Python's ``re`` reads it alike):
SPACES = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_SPACE_CHARS = (
    "".join(
        chr(c)
        for c in (9, 10, 11, 12, 13, 32, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029)
    )
    + "\u202f\u205f\u3000\ufeff"
)
#: What :func:`_query` accepts, stated for ``/openapi.json``: spaces around, then 1 to
#: MAX_QUERY characters that start and end with a non-space; no U+0000 anywhere.
QUERY_PATTERN = (
    rf"^[{SPACES}]*[^{SPACES}\u0000](?:[^\u0000]{{0,{MAX_QUERY - 2}}}[^{SPACES}\u0000])?"
    rf"[{SPACES}]*$"
)


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["message", "title"]
    conversationId: str
    conversationTitle: str
    messageId: str | None = None
    role: Literal["user", "assistant"] | None = None
    snippet: str
    createdAt: str
    onActivePath: bool | None = None


class SearchPage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[SearchResult]
    nextCursor: str | None


def _refuse(field: str, text: str) -> ApiError:
    return ApiError(400, "invalid_request", f"{field}: {text}", extra={"field": field})


def _query(raw: str | None) -> str:
    text = (raw or "").strip(_SPACE_CHARS)
    if not 1 <= len(text) <= MAX_QUERY:
        raise _refuse("q", f"from 1 to {MAX_QUERY} characters (not counting spaces around)")
    if "\x00" in text:
        raise _refuse("q", "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse("q", "must be UTF-8 text") from None
    return text


def _limit(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _refuse("limit", f"an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(hit: Hit) -> str:
    raw = orjson.dumps([hit.score, hit.key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        score, key = orjson.loads(raw)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError("score")
        if not isinstance(key, str) or not key.startswith(("m:", "t:")) or "\x00" in key:
            raise ValueError("key")
        if not math.isfinite(float(score)):
            raise ValueError("score")
        return float(score), key
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise _refuse("cursor", "not a cursor from this API") from None


def _result(hit: Hit) -> dict[str, object]:
    out: dict[str, object] = {
        "kind": "title" if hit.message_id is None else "message",
        "conversationId": hit.conversation_id,
        "conversationTitle": hit.title,
        "snippet": hit.snippet,
        "createdAt": iso(hit.created_at),
    }
    if hit.message_id is not None:
        out["messageId"] = hit.message_id
        out["role"] = hit.role
        out["onActivePath"] = bool(hit.on_active_path)
    return out


@routes.get("/api/search")
async def search_route(request: web.Request) -> web.Response:
    user = require_user(request)
    text = _query(request.query.get("q"))
    limit = _limit(request.query.get("limit", str(DEFAULT_LIMIT)))
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    hits, more = await search(user.id, text, limit=limit, after=after)
    next_cursor = encode_cursor(hits[-1]) if more and hits else None
    return wire.reply(
        SearchPage, {"results": [_result(hit) for hit in hits], "nextCursor": next_cursor}
    )
