"""``/device``: the page where a signed-in user enters a device's code and approves it.

Server-rendered, no script. Every dynamic value goes through :func:`html.escape`. The
Approve/Deny buttons POST back to ``/device`` with the session cookie; the browser sends a
same-origin ``Origin``, which the CSRF rule requires (the page asks for
``Referrer-Policy: same-origin`` so that ``Origin`` is never ``null``).
"""

from __future__ import annotations

from datetime import UTC
from functools import cache
from html import escape
from importlib.resources import files
from string import Template
from urllib.parse import urlencode

from aiohttp import web

from actors.clock import utcnow
from server.auth import verification
from server.auth.current import CurrentUser, current_user
from server.auth.device_flow import CodeView, display, normalize
from server.core import device_clients
from server.core.app_keys import SETTINGS
from server.core.errors import ApiError
from server.http.bodies import read_form
from server.http.nul_guard import first_nul

routes = web.RouteTableDef()

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@cache
def _template() -> Template:
    return Template(files("server.web").joinpath("device.html").read_text(encoding="utf-8"))


def _page(title: str, content: str, *, status: int = 200) -> web.Response:
    body = _template().substitute(title=escape(title), content=content)
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=dict(_HEADERS)
    )


def _refused(content: str, exc: ApiError) -> web.Response:
    """A page for a refused code, with the status the JSON API gives the same refusal where
    it is not the user's typing: ``403`` for a code another account claimed, ``429`` with
    ``Retry-After`` when rate limited (so that clients and proxies see them); a mistyped,
    expired or decided code is the form shown again (``200``) with the message."""
    if exc.status not in (403, 429):
        return _page("Connect a device", content)
    response = _page("Connect a device", content, status=exc.status)
    retry = exc.headers.get("Retry-After")
    if retry is not None:
        response.headers["Retry-After"] = retry
    return response


def _entry_form(value: str = "", message: str = "", kind: str = "error") -> str:
    note = f'<p class="{kind}">{escape(message)}</p>' if message else ""
    return (
        f"{note}<p>Enter the code shown on your device.</p>"
        '<form method="get" action="/device">'
        '<input type="text" name="user_code" autocomplete="off" autofocus required'
        f' maxlength="16" placeholder="XXXX-XXXX" value="{escape(value)}"> '
        '<button type="submit">Continue</button></form>'
    )


def _sign_in_prompt(request: web.Request, raw: str | None) -> web.Response:
    settings = request.app[SETTINGS]
    back = "/device" + (f"?{urlencode({'user_code': raw})}" if raw else "")
    parts = ["<p>Sign in to connect your device.</p>"]
    if raw:
        parts.append(f'<p>Code: <span class="code">{escape(raw)}</span></p>')
    if settings.github_enabled:
        link = "/auth/github?" + urlencode({"next": back})
        parts.append(f'<p><a class="button" href="{escape(link)}">Sign in with GitHub</a></p>')
    if settings.local_mode:
        parts.append(
            '<p class="note">This server runs in local mode: open the one-time sign-in link it '
            "printed in its terminal at start-up (<code>Sign in: …/auth/local?token=…</code>), "
            f'then come back to <a href="{escape(back)}">this page</a>.</p>'
        )
    if not settings.github_enabled and not settings.local_mode:
        parts.append('<p class="note">No sign-in method is configured on this server.</p>')
    return _page("Connect a device", "".join(parts))


def _ago(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    hours = minutes // 60
    return f"{hours} hour{'s' if hours != 1 else ''} ago"


def _client(view: CodeView, allowed: list[str]) -> str:
    """Our fixed name for a known client; any other id is the device's own words: shown
    raw (escaped) and, unless the operator listed it, marked unverified."""
    shown = device_clients.label(view.client_id, allowed)
    if shown.name is not None:
        return escape(shown.name)
    raw = f"<code>{escape(view.client_id)}</code>"
    if shown.verified:
        return raw
    return f'{raw} <strong class="error">unverified client</strong>'


def _decision_form(view: CodeView, allowed: list[str]) -> str:
    code = display(view.user_code)
    scope = view.scope or "(none)"
    at = view.requested_at.astimezone(UTC)
    when = (
        f'<time datetime="{escape(at.isoformat())}">{at:%Y-%m-%d %H:%M:%S} UTC</time>'
        f" ({_ago(max(0.0, (utcnow() - at).total_seconds()))})"
    )
    where = escape(view.requested_from) if view.requested_from else "(not recorded)"
    warning = (
        ""
        if device_clients.label(view.client_id, allowed).verified
        else '<p class="error">This server does not know this client: its name is whatever '
        "the device sent. Approve only if you started this sign-in yourself, just now, "
        "from the address below.</p>"
    )
    return (
        f'<p>Code: <span class="code">{escape(code)}</span></p>'
        "<p>A device is asking to sign in to your account.</p>"
        f"{warning}"
        f"<dl><dt>Client</dt><dd>{_client(view, allowed)}</dd>"
        f"<dt>Requested</dt><dd>{when}</dd>"
        f"<dt>From address</dt><dd>{where}</dd>"
        f"<dt>Scope</dt><dd>{escape(scope)}</dd></dl>"
        '<p class="note">Approve only a request you made yourself.</p>'
        '<form method="post" action="/device">'
        f'<input type="hidden" name="user_code" value="{escape(code)}">'
        '<button type="submit" name="action" value="approve">Approve</button>'
        '<button type="submit" name="action" value="deny">Deny</button></form>'
    )


def _signed_in_as(user: CurrentUser) -> str:
    who = user.name or user.email or "you"
    return f'<p class="note">Signed in as {escape(who)}.</p>'


@routes.get("/device")
async def device_page(request: web.Request) -> web.Response:
    raw = request.query.get("user_code") or None
    user = current_user(request)
    if user is None:
        return _sign_in_prompt(request, raw)
    if raw is None:
        return _page("Connect a device", _signed_in_as(user) + _entry_form())
    try:
        view = await verification.lookup(request, raw, user.id)
    except ApiError as exc:
        return _refused(_signed_in_as(user) + _entry_form(raw, exc.message), exc)
    if view.status != "pending":
        word = "approved" if view.status == "approved" else "denied"
        return _page("Connect a device", f"<p>This code was already {word}.</p>")
    if view.claimed_by != user.id:
        # The JSON API's answer to the same case is 403 access_denied (docs/api.md).
        return _page(
            "Connect a device",
            '<p class="error">This code is being approved by another account.</p>' + _entry_form(),
            status=403,
        )
    allowed = request.app[SETTINGS].device_client_ids
    return _page("Connect a device", _signed_in_as(user) + _decision_form(view, allowed))


@routes.post("/device")
async def device_decision(request: web.Request) -> web.Response:
    try:
        form = await read_form(request)
    except ApiError as exc:
        return _page("Connect a device", _entry_form("", exc.message), status=400)
    raw = form.get("user_code")
    action = form.get("action")
    if first_nul({"user_code": raw, "action": action}) is not None:
        return _page("Connect a device", _entry_form("", "Enter the code shown"), status=400)
    code = raw if isinstance(raw, str) else None
    user = current_user(request)
    if user is None:
        return _sign_in_prompt(request, code)
    if action not in ("approve", "deny"):
        return _page("Connect a device", _entry_form(code or "", "Choose Approve or Deny."))
    try:
        await verification.decide(request, code, user.id, approve=action == "approve")
    except ApiError as exc:
        return _refused(_entry_form(code or "", exc.message), exc)
    if action == "approve":
        message = "Device approved. You can return to your terminal."
        kind = "ok"
    else:
        message = "Request denied. The device was not signed in."
        kind = "note"
    normal = normalize(code or "")
    shown = f' <span class="code">{escape(display(normal))}</span>' if normal else ""
    return _page("Connect a device", f'<p class="{kind}">{escape(message)}</p><p>{shown}</p>')
