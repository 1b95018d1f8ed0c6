"""Security headers on every response, as an ``on_response_prepare`` hook.

Every response: ``Server: cero`` (aiohttp's default names its own and Python's versions,
which only help someone looking for a known hole), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: same-origin`` (unless the handler set its own), and
``Strict-Transport-Security`` when the public URL is https. Every HTML response: a
``Content-Security-Policy`` — the page's own when it sets one
(``/app`` and ``/device`` do, each as strict as that page allows), else :data:`HTML_CSP` —
that always carries ``frame-ancestors 'none'``, and ``X-Frame-Options: DENY`` for browsers
without CSP level 2. A hook rather than a middleware so that answers made outside the
handler chain (aiohttp's own exceptions, streams, the WebSocket upgrade) get them too.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from server.core.app_keys import SETTINGS
from server.http.middleware import REQUEST_ID

#: For an HTML answer that brings no policy of its own: nothing loads, nothing frames it.
HTML_CSP = "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
#: Two years, the preload list's minimum; no ``includeSubDomains`` (other hosts are not ours).
HSTS = "max-age=63072000"


#: The ``Server`` header of every answer: no product version.
SERVER = "cero"

#: On every answer, also those written before a request exists (the connection guard's
#: refusals, parser errors: :mod:`server.http.protocol`), which no hook sees. The names are
#: aiohttp's ``istr`` constants: a plain ``str`` name costs each response a cached
#: case-folded copy when its headers are written (~330 B that a WebSocket keeps for its
#: whole life, bench scenario 3).
EVERY_RESPONSE: dict[str, str] = {
    hdrs.SERVER: SERVER,
    hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
    hdrs.REFERRER_POLICY: "same-origin",
}


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_add_headers)


async def hide_server(request: web.Request, response: web.StreamResponse) -> None:
    """Replace aiohttp's ``Server: Python/3.x aiohttp/3.y`` (set just before this hook)."""
    response.headers[hdrs.SERVER] = SERVER


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    await hide_server(request, response)
    headers = response.headers
    request_id = request.get(REQUEST_ID)
    if request_id is not None and "X-Request-ID" not in headers:
        headers["X-Request-ID"] = request_id  # streams: prepared before the middleware ends
    for name, value in EVERY_RESPONSE.items():
        headers.setdefault(name, value)
    if request.app[SETTINGS].secure_cookies:  # the public URL is https
        headers.setdefault(hdrs.STRICT_TRANSPORT_SECURITY, HSTS)
    if _is_html(response):
        policy = headers.get(hdrs.CONTENT_SECURITY_POLICY)
        if policy is None:
            headers[hdrs.CONTENT_SECURITY_POLICY] = HTML_CSP
        elif "frame-ancestors" not in policy:
            headers[hdrs.CONTENT_SECURITY_POLICY] = f"{policy}; frame-ancestors 'none'"
        headers.setdefault(hdrs.X_FRAME_OPTIONS, "DENY")


def _is_html(response: web.StreamResponse) -> bool:
    """Read from the header, not ``response.content_type``: that property parses the header
    and caches the result in three more attributes of the response, which a WebSocket keeps
    for its whole life (and they push its attribute dict past CPython's shared-key limit:
    about 1.3 KB more per idle socket, bench scenario 3)."""
    mimetype = response.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0]
    return mimetype.strip().lower() == "text/html"
