"""Control characters and bytes that are not UTF-8 in every path and query parameter
(issue 20 item 5), on both engines, with a signed-in bearer: a 4xx (or the route's own
success), never a 500.

``GET /api/conversations/%00/messages`` answered ``500 internal`` on PostgreSQL (its text
cannot hold U+0000; SQLite answered 404). The fuzzer never sent it: the OpenAPI pattern
excludes NUL, and a schema-driven client honours it. So the routes are taken from the
app's router (a new route is covered without a change here) and the query parameters from
``server.routes.openapi.OPS`` plus one the document does not name; values are sent percent-encoded
exactly as given, bypassing every client-side check.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
import pytest_asyncio
from yarl import URL

from server.auth.sessions import SessionStore
from server.routes.openapi import OPS
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import WsPeer, new_conversation

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Percent-encoded as sent: NUL, other C0 and DEL controls, and byte sequences that are
#: not UTF-8 (a lone continuation byte, a truncated sequence, an encoded surrogate, an
#: overlong NUL).
BAD_VALUES = {
    "nul": "%00",
    "nul-suffix": "abc%00def",
    "soh": "%01",
    "esc": "%1B",
    "del": "%7F",
    "lone-byte": "%FF",
    "truncated": "%C3",
    "surrogate": "%ED%A0%80",
    "overlong-nul": "%C0%80",
}
#: A query parameter no route documents: every route must still ignore it or refuse it.
UNDOCUMENTED = "x"
_PARAM = re.compile(r"\{([^}]+)\}")


@dataclass
class Env:
    live: Live
    user_id: str
    conversation_id: str

    async def token(self) -> str:
        """A fresh session of the user: a request to sign-out or revoke-session ends the
        one it carries, and every route must be probed signed in."""
        token, _ = await SessionStore().start(self.user_id, ip_address="127.0.0.1")
        return token


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(live: Live) -> AsyncIterator[Env]:
    token, user_id = await make_user_session("Controls")
    async with aiohttp.ClientSession() as http:
        conversation_id = await new_conversation(http, live.url, token)
    yield Env(live, user_id, conversation_id)


def _routes(live: Live) -> list[tuple[str, str]]:
    """``(method, path template)`` of every route the app serves (HEAD is GET's)."""
    out = set()
    for route in live.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path and route.method not in ("HEAD", "OPTIONS", "*"):
            out.add((route.method, str(path)))
    # DELETE last: the query probes run on one real conversation, which a delete ends.
    return sorted(out, key=lambda r: (r[0] == "DELETE", r))


def _query_names(method: str, path: str) -> list[str]:
    op = OPS.get((method.lower(), path))
    names = [p.name for p in op.params if p.where == "query"] if op is not None else []
    return [*names, UNDOCUMENTED]


async def _probe(
    http: aiohttp.ClientSession, token: str, method: str, url: str
) -> tuple[int, str, bytes]:
    """Send ``url`` byte for byte (``encoded=True``); a streaming success is not read."""
    body: dict[str, object] | None = {} if method in ("POST", "PATCH", "PUT") else None
    return await _send(http, token, method, URL(url, encoded=True), body)


async def _send(
    http: aiohttp.ClientSession,
    token: str,
    method: str,
    url: URL,
    body: dict[str, object] | None,
) -> tuple[int, str, bytes]:
    async with http.request(
        method, url, headers=bearer(token), allow_redirects=False, json=body
    ) as resp:
        streaming = resp.content_type in ("text/event-stream", "application/x-ndjson")
        raw = b"" if streaming and resp.status < 300 else await resp.read()
        return resp.status, resp.content_type, raw


def _wrong(status: int, content_type: str, body: bytes, path: str) -> str | None:
    """What is wrong with an answer: a 5xx, or an API error that is not JSON."""
    if status >= 500 or (
        status >= 400 and path.startswith("/api/") and content_type != "application/json"
    ):
        return f"{status} {content_type} {body[:200]!r}"
    return None


async def test_path_parameters(env: Env) -> None:
    routes = [r for r in _routes(env.live) if _PARAM.search(r[1])]
    assert routes, "the router has routes with path parameters"
    wrong: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for method, path in routes:
            for name, bad in BAD_VALUES.items():
                url = env.live.url + _PARAM.sub(bad, path)
                if problem := _wrong(*await _probe(http, await env.token(), method, url), path):
                    wrong[f"{method} {path} ({name})"] = problem
    assert not wrong, wrong


async def test_query_parameters(env: Env) -> None:
    """Each query parameter alone, on a real conversation (so the value reaches the
    database), the others left out."""
    wrong: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for method, path in _routes(env.live):
            concrete = _PARAM.sub(env.conversation_id, path)
            for param in _query_names(method, path):
                for name, bad in BAD_VALUES.items():
                    url = f"{env.live.url}{concrete}?{param}={bad}"
                    if problem := _wrong(*await _probe(http, await env.token(), method, url), path):
                        wrong[f"{method} {path}?{param} ({name})"] = problem
    assert not wrong, wrong


async def test_body_fields(env: Env) -> None:
    """Every field of every JSON body the document describes, holding NUL: ``400`` naming
    the field (PostgreSQL text cannot store it; refused alike on SQLite)."""
    wrong: dict[str, str] = {}
    checked = 0
    async with aiohttp.ClientSession() as http:
        # Its own conversation: the query probes may have deleted the module's.
        conversation_id = await new_conversation(http, env.live.url, await env.token())
        for method, path in _routes(env.live):
            op = OPS.get((method.lower(), path))
            if op is None or op.body is None:
                continue
            url = URL(env.live.url + _PARAM.sub(conversation_id, path))
            for name, info in op.body.model_fields.items():
                field = info.alias or name
                status, _, raw = await _send(
                    http, await env.token(), method, url, {field: "a\x00b"}
                )
                checked += 1
                answer = orjson.loads(raw) if raw.startswith(b"{") else {}
                if status != 400 or answer.get("field") != field:
                    wrong[f"{method} {path} {field}"] = f"{status} {raw[:200]!r}"
    assert checked, "the document describes JSON bodies"
    assert not wrong, wrong


async def test_websocket_frames(env: Env) -> None:
    """The WebSocket's frames are bodies too: a NUL in any field is an ``invalid_frame``
    fault naming it, and the socket stays open."""
    async with aiohttp.ClientSession() as http:
        token = await env.token()
        ws = await http.ws_connect(env.live.url + "/api/ws", headers=bearer(token))
        peer = WsPeer(ws).start()
        try:
            for kind, field in (
                ("subscribe", "conversationId"),
                ("subscribe", "after"),
                ("unsubscribe", "conversationId"),
                ("cancel", "generationId"),
                ("send", "message"),
            ):
                frame = {"conversationId": "c", "message": "hi", field: "a\x00b"}
                await peer.send(type=kind, **frame)
                fault = await peer.wait_for(lambda f: f["type"] == "fault")
                assert fault["code"] == "invalid_frame", (kind, fault)
                assert fault["error"].startswith(f"{field}: "), (kind, fault)
                peer.frames.clear()
            await peer.send(type="ping")
            await peer.wait_for(lambda f: f["type"] == "ack" and f.get("of") == "ping")
        finally:
            await peer.close()


async def test_fields_the_route_does_not_read_are_ignored_nul_or_not(env: Env) -> None:
    """A NUL reaches no database through a field no route reads: like any unknown field,
    it is ignored (refusing it rejected valid requests: schemathesis' ST202)."""
    async with aiohttp.ClientSession() as http:
        token = await env.token()
        conversation_id = await new_conversation(http, env.live.url, token)
        url = URL(f"{env.live.url}/api/conversations/{conversation_id}")
        status, _, raw = await _send(
            http, token, "PATCH", url, {"shortTitle": "renamed", "x\x00": "a\x00b"}
        )
        assert status == 200, raw
        listed = URL(f"{env.live.url}/api/conversations?x%00=%00&limit=5", encoded=True)
        status, _, raw = await _send(http, token, "GET", listed, None)
        assert status == 200, raw
        status, _, raw = await _send(
            http,
            token,
            "GET",
            URL(f"{env.live.url}/api/conversations?cursor=%00", encoded=True),
            None,
        )
        assert status < 500, raw
