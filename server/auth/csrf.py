"""Origin checks (CSRF): a cookie-authenticated state change must come from a trusted origin.

Trusted origins are ``CERO_TRUSTED_ORIGINS`` plus the public URL (``Settings.trusted_origins``).
The browser's ``Origin`` header decides; lacking it, the origin of ``Referer``; lacking both,
the request is not trusted.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from server.core.app_keys import SETTINGS

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` in lower case, default port dropped; ``None`` if not http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def trusted_origin_set(request: web.Request) -> frozenset[str]:
    settings = request.app[SETTINGS]
    return frozenset(o for o in (origin_of(x) for x in settings.trusted_origins) if o)


def origin_trusted(request: web.Request) -> bool:
    """``Origin`` (or, lacking it, ``Referer``) names a trusted origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        origin = request.headers.get("Referer")
    if not origin or origin == "null":
        return False
    found = origin_of(origin)
    return found is not None and found in trusted_origin_set(request)
