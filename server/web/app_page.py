"""``GET /app``: the web chat page — static files, no build step, no CDN.

The page (``server/web/app/``: ``index.html``, ``app.css`` and the ES modules ``app.js``,
``branches.js`` (the conversation-branch controls) and ``dom.js``) speaks only the
public API of the contract (REST and ``/api/ws``) with the session cookie. The one thing
rendered on the server is which sign-in methods exist (two ``data-`` attributes on
``<body>``), since no public endpoint says whether GitHub is configured.

A strict Content-Security-Policy makes a model answer that smuggles markup inert even if
the page ever rendered it: scripts and styles only from this origin (no inline script),
``connect-src 'self'`` (REST and the WebSocket), no images from elsewhere, no framing.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from string import Template

from aiohttp import web

from server.core.app_keys import SETTINGS
from server.core.errors import not_found

routes = web.RouteTableDef()

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
#: The page's assets, by file name; nothing else under ``/app/`` is served.
ASSETS = {
    "app.js": "text/javascript",
    "branches.js": "text/javascript",
    "dom.js": "text/javascript",
    "app.css": "text/css",
}


@cache
def _read(name: str) -> str:
    return files("server.web").joinpath("app", name).read_text(encoding="utf-8")


@routes.get("/app")
async def app_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = Template(_read("index.html")).substitute(
        github="true" if settings.github_enabled else "false",
        local="true" if settings.local_mode else "false",
    )
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": CSP, **_SECURITY}
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)


@routes.get("/app/{name}")
async def app_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = ASSETS.get(name)
    if kind is None:
        raise not_found()
    headers = {"Cache-Control": "no-cache", **_SECURITY}
    return web.Response(text=_read(name), content_type=kind, charset="utf-8", headers=headers)
