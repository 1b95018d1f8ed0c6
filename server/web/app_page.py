"""``GET /app``: the web chat page — static files, no build step, no CDN.

The page (``server/web/app/``: ``index.html``, ``app.css`` and the ES modules ``app.js``,
``branches.js`` (the conversation-branch controls), ``markdown.js`` (answers rendered with
markdown-it and highlight.js), ``clipboard.js``, ``failures.js`` (what each error code
means to a person), ``sessions.js`` (the Sessions panel), ``attachments.js`` (uploads, their
chips, and attachments in the log) and ``dom.js``) speaks only the
public API of the contract (REST and ``/api/ws``) with the session cookie. The one thing
rendered on the server is which sign-in methods exist (two ``data-`` attributes on
``<body>``), since no public endpoint says whether GitHub is configured.

A strict Content-Security-Policy makes a model answer that smuggles markup inert even if
the page ever rendered it: scripts and styles only from this origin (no inline script),
``connect-src 'self'`` (REST and the WebSocket), no images from elsewhere (``blob:`` in
``img-src`` only: the preview of an image picked for upload is an object URL of the local
file), no framing.

The two libraries are files under ``/app/vendor/``, taken from their npm packages by
``scripts/vendor_web.py``; only the files its ``manifest.json`` lists are served, each with
its sha256 as ``ETag`` (they change only with a new pinned version).
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from pathlib import PurePosixPath
from string import Template
from typing import Any

from aiohttp import hdrs, web

from server.core.app_keys import SETTINGS
from server.core.errors import not_found

routes = web.RouteTableDef()

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
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
    "attachments.js": "text/javascript",
    "branches.js": "text/javascript",
    "dom.js": "text/javascript",
    "markdown.js": "text/javascript",
    "clipboard.js": "text/javascript",
    "failures.js": "text/javascript",
    "sessions.js": "text/javascript",
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


#: The vendored files' types, by suffix (``scripts/vendor_web.py`` writes only these).
VENDOR_TYPES = {".mjs": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


@cache
def _vendor_manifest() -> dict[str, Any]:
    text = files("server.web").joinpath("app", "vendor", "manifest.json").read_text("utf-8")
    listed: dict[str, Any] = json.loads(text)["files"]
    return listed


@cache
def _read_vendor(name: str) -> bytes:
    return files("server.web").joinpath("app", "vendor", name).read_bytes()


@routes.get("/app/vendor/{name}")
async def app_vendor(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    entry = _vendor_manifest().get(name)
    kind = VENDOR_TYPES.get(PurePosixPath(name).suffix)
    if entry is None or kind is None:
        raise not_found()
    etag = f'"{entry["sha256"]}"'
    headers = {"Cache-Control": "no-cache", hdrs.ETAG: etag, **_SECURITY}
    if etag in request.headers.get(hdrs.IF_NONE_MATCH, ""):
        return web.Response(status=304, headers=headers)
    response = web.Response(body=_read_vendor(name), content_type=kind, headers=headers)
    response.charset = "utf-8"
    response.enable_compression()
    return response
