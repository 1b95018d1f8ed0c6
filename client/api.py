"""The HTTP side of the CLI: one aiohttp session, the public API of the contract only.

Every failure becomes a :class:`CliError` with one line a person can act on: the server's
own error text for a refused request, "cannot reach" for no server, "run `cero login`" for
a rejected token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from client import __version__
from client.errors import CliError, Exit
from client.friendly import cli_hints, network_reason

USER_AGENT = f"cero-cli/{__version__}"
#: REST calls: a whole answer within this.
REST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
#: Streams: no total; the server pings every 15 s, so 45 s of silence is a dead connection.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=45)


def error_text(status: int, body: bytes) -> tuple[str, str | None]:
    """The human text and code of an error answer (both JSON shapes of the contract)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        description = data.get("error_description")
        if isinstance(description, str) and description:  # /api/auth/*: OAuth style
            code = data.get("error")
            return description, code if isinstance(code, str) else None
        text, code = data.get("error"), data.get("code")
        if isinstance(text, str) and text:
            return text, code if isinstance(code, str) else None
    return f"the server answered HTTP {status}", None


class Api:
    """Calls to one server, with or without a bearer token."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT}, timeout=REST_TIMEOUT
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Api(...)`"
        return self._session

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = dict(extra or {})
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    def unreachable(self, exc: BaseException) -> CliError:
        reason = network_reason(exc)
        return CliError(f"cannot reach the server at {self.server}: {reason}", Exit.UNREACHABLE)

    def refused(self, status: int, body: bytes) -> CliError:
        text, code = error_text(status, body)
        text = cli_hints(text)
        if status == 401:
            if self.token:
                return CliError(
                    f"the server at {self.server} rejected the saved token (signed out, "
                    "revoked or expired); run `cero login`",
                    Exit.AUTH,
                )
            return CliError(f"not signed in to {self.server}; run `cero login`", Exit.AUTH)
        suffix = f" ({code})" if code and code not in text else ""
        return CliError(f"{text}{suffix}", retryable=status in (502, 503, 504), reason=code)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """One JSON call; the parsed answer, or :class:`CliError`."""
        try:
            async with self.session.request(
                method, self.server + path, json=json, params=params, headers=self.headers()
            ) as resp:
                body = await resp.read()
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise self.unreachable(exc) from None
        if resp.status not in ok:
            raise self.refused(resp.status, body)
        try:
            return orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            raise CliError(f"the server at {self.server} answered something not JSON") from None

    async def oauth(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """A device-flow call: its status and JSON body, errors included (they are states)."""
        try:
            async with self.session.post(self.server + path, json=form) as resp:
                body = await resp.read()
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise self.unreachable(exc) from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise CliError(
                f"the server at {self.server} answered HTTP {resp.status} without JSON "
                "(is it a Cero API server?)"
            )
        return resp.status, data

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        last_event_id: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An SSE response that answered 200 (anything else is raised as the server's error).

        Connection errors are left to the caller, who decides whether to resume."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        async with self.session.request(
            method,
            self.server + path,
            json=json,
            headers=self.headers(headers),
            timeout=STREAM_TIMEOUT,
        ) as resp:
            if resp.status != 200:
                raise self.refused(resp.status, await resp.read())
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise CliError(
                    f"the server at {self.server} did not answer with an event stream "
                    "(is it a Cero API server?)"
                )
            yield resp
