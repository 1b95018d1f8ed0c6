"""``cero login``: the OAuth 2.0 Device Authorization Grant (RFC 8628) against
``/api/auth/device/*``.

:class:`PollSchedule` is the grant's client rules, sans I/O (tested without a clock): wait
``interval`` seconds between polls (5 when the server names none), add 5 s for good on every
``slow_down`` (§3.5), back off on network errors, and stop at ``expires_in``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import webbrowser
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client.api import Api
from client.errors import CliError, Exit

CLIENT_ID = "cero-cli"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0
MAX_NETWORK_BACKOFF = 60.0


@dataclass
class PollSchedule:
    """When to poll next, and when to give up."""

    interval: float
    deadline: float  # on the monotonic clock
    network_backoff: float = field(default=0.0)

    @classmethod
    def start(cls, answer: dict[str, Any], now: float) -> PollSchedule:
        interval = answer.get("interval")
        expires = answer.get("expires_in")
        return cls(
            interval=float(interval)
            if isinstance(interval, int | float) and interval >= 0
            else DEFAULT_INTERVAL,
            deadline=now + (float(expires) if isinstance(expires, int | float) else 1800.0),
        )

    def delay(self) -> float:
        """Seconds to wait before the next poll."""
        return max(self.interval, self.network_backoff)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def record(self, error: str) -> None:
        """The server's ``error`` for a poll; raises :class:`CliError` when the grant is over."""
        self.network_backoff = 0.0
        if error == "authorization_pending":
            return
        if error == "slow_down":
            self.interval += SLOW_DOWN_STEP
            return
        if error == "access_denied":
            raise CliError("the sign-in was denied in the browser", Exit.AUTH)
        if error == "expired_token":
            raise CliError("the code expired before it was approved; run `cero login` again")
        raise CliError(f"the server refused the sign-in: {error}", Exit.AUTH)

    def network_error(self) -> None:
        """A poll that got no answer: back off exponentially (RFC 8628 §3.5)."""
        self.network_backoff = min(
            MAX_NETWORK_BACKOFF, max(self.interval, 1.0, self.network_backoff * 2)
        )


def open_browser(url: str, environ: Mapping[str, str]) -> bool:
    """Open ``url`` in a graphical browser when there is one; never fail the login over it.

    On Linux without a display ``webbrowser`` would fall back to a console browser (lynx,
    w3m) that takes over the very terminal showing the code: not then."""
    if sys.platform.startswith("linux") and not (
        environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        return webbrowser.open(url, new=2)
    except Exception:
        return False


async def device_login(
    api: Api, *, say: Any, browser: Mapping[str, str] | None, scope: str = "openid"
) -> tuple[str, dict[str, Any]]:
    """``browser``: the environment when a browser may be opened, else ``None``."""
    """Run the grant; return ``(access token, user)``. ``say`` prints one line to stderr."""
    status, code = await api.oauth(
        "/api/auth/device/code", {"client_id": CLIENT_ID, "scope": scope}
    )
    if status != 200:
        text = code.get("error_description") or code.get("error") or f"HTTP {status}"
        raise CliError(f"the server refused to start a sign-in: {text}")
    try:
        device_code = str(code["device_code"])
        user_code = str(code["user_code"])
        uri = str(code["verification_uri"])
    except KeyError as exc:
        raise CliError(f"the server's device code answer lacks {exc.args[0]}") from None
    complete = str(code.get("verification_uri_complete") or uri)
    say(f"To sign in, open {uri} and enter the code: {user_code}")
    say(f"  (or open {complete})")
    if browser is not None and open_browser(complete, browser):
        say("A browser window was opened; approve the sign-in there.")
    say("Waiting for approval… (Ctrl-C to stop)")
    schedule = PollSchedule.start(code, time.monotonic())
    form = {"grant_type": GRANT_TYPE, "device_code": device_code, "client_id": CLIENT_ID}
    while True:
        await asyncio.sleep(schedule.delay())
        if schedule.expired(time.monotonic()):
            raise CliError("the code expired before it was approved; run `cero login` again")
        try:
            status, answer = await api.oauth("/api/auth/device/token", form)
        except CliError as exc:
            if exc.code != Exit.UNREACHABLE:
                raise
            schedule.network_error()
            continue
        if status == 200 and isinstance(answer.get("access_token"), str):
            token: str = answer["access_token"]
            break
        error = answer.get("error")
        schedule.record(error if isinstance(error, str) else f"HTTP {status}")
    api.token = token
    who = await api.request("GET", "/api/user/whoami")
    user = who.get("user") if isinstance(who, dict) else None
    return token, user if isinstance(user, dict) else {}
