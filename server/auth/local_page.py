"""The page a browser gets for a local sign-in link that is refused (used, expired, not
ours, or local mode off): server-rendered with the ``/device`` page's template, no script,
status ``403`` like the JSON answer. Every dynamic value is escaped by the caller."""

from __future__ import annotations

from functools import cache
from html import escape
from importlib.resources import files
from string import Template

from aiohttp import web

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _template() -> Template:
    return Template(files("server.web").joinpath("device.html").read_text(encoding="utf-8"))


def wants_html(request: web.Request) -> bool:
    """A browser's navigation (``Accept`` names ``text/html``), not an API client."""
    return "text/html" in request.headers.get("Accept", "").lower()


def refused_page(title: str, content: str) -> web.Response:
    body = _template().substitute(title=escape(title), content=content)
    return web.Response(
        status=403, text=body, content_type="text/html", charset="utf-8", headers=dict(_HEADERS)
    )
