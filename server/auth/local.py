"""Local sign-in for the embedded default (like Jupyter's token link).

When GitHub is not configured and the server binds loopback only (``Settings.local_mode``),
start-up announces a single-use link ``<public url>/auth/local?token=...``; opening it
signs in the local user (an ``Account`` with provider ``local``) and redirects to the web
app (``/app``) or a same-origin ``next`` path. ``cero-api sign-in-link`` prints a fresh one
at any time (a second browser, after a sign-out). On any other bind there is no link and
``/auth/local`` is 403.

Links live in the database (``local_sign_in_link``), so the command, another process,
issues links the running server accepts: only the SHA-256 of a token is stored, a link
works once (one conditional ``UPDATE`` claims it, whichever process or request comes
first) and for ``CERO_LOCAL_LINK_TTL`` seconds. A refused link answers a page that says
what happened and how to get a new one when the client asks for HTML, JSON otherwise;
a browser that is signed in already (the link reloaded) goes on to the app instead.
No new link is ever handed out over HTTP, not even to a loopback peer: any local process
or user of a shared machine could ask for one, which is what the token guards against.

The link is the one secret this server deliberately prints (stderr at start-up, stdout of
the command): it is how the operator gets in; the structured log, which may be shipped
elsewhere, never holds the token.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from enum import Enum
from html import escape
from urllib.parse import quote

import structlog
from aiohttp import web

from actors.clock import utcnow
from server.auth.cookies import COOKIES
from server.auth.current import current_user
from server.auth.local_page import refused_page, wants_html
from server.auth.redirects import safe_path
from server.auth.sessions import SESSIONS
from server.auth.sign_in_limit import admit_sign_in
from server.auth.users import Profile, link_or_create
from server.core.app_keys import SETTINGS
from server.core.client_ip import client_ip
from server.core.config import Settings
from server.core.errors import ApiError
from server.core.ids import new_id, new_token, same, token_hash
from server.storage.tables import LocalSignInLink

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

LOCAL_PROFILE = Profile(provider="local", account_id="local", name="Local user")
#: Longer tokens are not ours: refused without a database lookup.
MAX_TOKEN_CHARS = 256
#: Links expired (or used) this long ago are deleted when the next one is issued.
PURGE_AFTER = timedelta(days=1)
#: What the operator runs for a new link (said by the refusal page and the JSON error).
COMMAND = "cero-api sign-in-link"


class Redeemed(Enum):
    """What became of a link that was opened."""

    OK = "ok"
    USED = "used"
    EXPIRED = "expired"
    INVALID = "invalid"


def link_url(settings: Settings, token: str, next_path: str | None = None) -> str:
    url = f"{settings.public_url}/auth/local?token={token}"
    if next_path:
        url += f"&next={quote(next_path, safe='/')}"
    return url


async def issue_link(ttl_seconds: int) -> str:
    """Store a new link (its token's hash) for ``ttl_seconds``; return the token. Links
    gone for a day are deleted on the way."""
    now = utcnow()
    token = new_token()
    await LocalSignInLink.insert(
        LocalSignInLink(
            id=new_id(),
            created_at=now,
            token_hash=token_hash(token),
            expires_at=now + timedelta(seconds=ttl_seconds),
            used_at=None,
        )
    ).run()
    await LocalSignInLink.delete().where(LocalSignInLink.expires_at < now - PURGE_AFTER).run()
    return token


async def redeem(token: str) -> Redeemed:
    """Claim the link of ``token`` (once: a conditional update), or say why not."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return Redeemed.INVALID
    digest = token_hash(token)
    now = utcnow()
    claimed = (
        await LocalSignInLink.update({LocalSignInLink.used_at: now})
        .where(
            (LocalSignInLink.token_hash == digest)
            & LocalSignInLink.used_at.is_null()
            & (LocalSignInLink.expires_at > now)
        )
        .returning(LocalSignInLink.token_hash)
        .run()
    )
    if claimed and same(str(claimed[0]["token_hash"]), digest):
        return Redeemed.OK
    row = (
        await LocalSignInLink.select(LocalSignInLink.token_hash, LocalSignInLink.used_at)
        .where(LocalSignInLink.token_hash == digest)
        .first()
        .run()
    )
    if row is None or not same(str(row["token_hash"]), digest):
        return Redeemed.INVALID
    return Redeemed.USED if row["used_at"] is not None else Redeemed.EXPIRED


async def announce(app: web.Application) -> None:
    """Log and print the sign-in link in local mode; called once the server listens, so a
    start-up that fails (port taken) prints its one error line and no dead link."""
    settings = app[SETTINGS]
    if not settings.local_mode:
        return
    try:
        token = await issue_link(settings.local_link_ttl)
    except Exception as exc:
        # The database went away between start-up and here (a fresh-clone CI run cut it
        # right after `listening`): the server keeps serving (``/readyz`` says why) and
        # the link can be asked for later; start-up must not die over it.
        log.warning(
            "local_sign_in_unavailable",
            error=repr(exc)[:200],
            hint="`cero-api sign-in-link` prints one once the database answers",
        )
        return
    url = link_url(settings, token)
    log.info(
        "local_sign_in",
        url=f"{settings.public_url}/auth/local",
        expires_in=settings.local_link_ttl,
        hint="see stderr; `cero-api sign-in-link` prints a new one",
    )
    sys.stderr.write(f"Sign in: {url}\n")
    sys.stderr.flush()


_REFUSALS: dict[Redeemed, tuple[str, str]] = {
    Redeemed.USED: (
        "This sign-in link was already used",
        "Each link signs in one browser, once. To sign in again (after signing out, or in "
        "another browser), get a new link.",
    ),
    Redeemed.EXPIRED: (
        "This sign-in link has expired",
        "A link works for a limited time after it is printed. Get a new link.",
    ),
    Redeemed.INVALID: (
        "This sign-in link is not valid",
        "It is not a link this server issued (mistyped, cut short, or printed for another "
        "database). Get a new link.",
    ),
}


def _refused(request: web.Request, outcome: Redeemed) -> web.Response:
    title, text = _REFUSALS[outcome]
    if not wants_html(request):
        raise ApiError(
            403,
            "forbidden",
            f"{title}; run `{COMMAND}` where the server runs for a new one",
            extra={"reason": outcome.value},
        )
    minutes = max(1, request.app[SETTINGS].local_link_ttl // 60)
    return refused_page(
        title,
        f"<p>{escape(text)}</p>"
        "<p>On the machine where the server runs, in its directory (the same "
        "<code>DATABASE_URL</code>), run:</p>"
        f"<pre><code>{escape(COMMAND)}</code></pre>"
        f"<p>It prints a new link that works once, for {minutes} minutes. Restarting the "
        "server also prints one.</p>",
    )


@routes.get("/auth/local")
async def local_sign_in(request: web.Request) -> web.Response:
    await admit_sign_in(request)
    if not request.app[SETTINGS].local_mode:
        if wants_html(request):
            return refused_page(
                "Local sign-in is off",
                "<p>This server is not in local mode: it is reachable beyond this machine "
                "or GitHub sign-in is configured. Sign in from the web app.</p>",
            )
        raise ApiError(403, "forbidden", "Local sign-in is only available on a loopback bind")
    outcome = await redeem(request.query.get("token", ""))
    target = safe_path(request.query.get("next")) or "/app"
    if outcome is not Redeemed.OK:
        log.info("local_sign_in_refused", reason=outcome.value)
        if wants_html(request) and current_user(request) is not None:
            # The link opened again in the browser it signed in (a reload, a bookmark):
            # that browser is in already, so on to the app rather than a refusal.
            return web.Response(status=302, headers={"Location": target})
        return _refused(request, outcome)
    user_id, _ = await link_or_create(LOCAL_PROFILE)
    token, resolved = await request.app[SESSIONS].start(
        user_id, ip_address=client_ip(request), user_agent=request.headers.get("User-Agent")
    )
    log.info("signed_in", provider="local", user_id=user_id, session_id=resolved.session.id)
    response = web.Response(status=302, headers={"Location": target})
    request.app[COOKIES].set_session(response, token, resolved)
    return response
