"""Where sign-in may send a browser: a same-origin path or a trusted origin, never elsewhere."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from server.auth.csrf import origin_of, trusted_origin_set

MAX_URL_CHARS = 2048


def safe_path(value: str | None) -> str | None:
    """A same-origin absolute path (``/x?y``), refusing ``//host`` and backslash tricks."""
    if not value or len(value) > MAX_URL_CHARS:
        return None
    if any(ord(ch) < 0x21 or ch == "\\" or ord(ch) == 0x7F for ch in value):
        return None
    if not value.startswith("/") or value.startswith("//"):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def safe_target(request: web.Request, value: str | None) -> str | None:
    """``value`` when it is a same-origin path or an http(s) URL on a trusted origin."""
    if value is None:
        return None
    path = safe_path(value)
    if path is not None:
        return path
    if len(value) > MAX_URL_CHARS or any(ord(ch) < 0x21 or ch == "\\" for ch in value):
        return None
    origin = origin_of(value)
    if origin is None or origin not in trusted_origin_set(request):
        return None
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        return None
    return value


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))
