"""The authorization matrix: every route of the app's router and every WebSocket command,
table-driven, on both engines.

For each route (walked from ``app.router.routes()``, so a route added without a row here
fails :func:`test_every_route_is_in_the_table`):

- without a credential, and with an expired, a revoked or a signed-out bearer token: ``401``
  for a route that needs a user; a public route never answers ``401``/5xx;
- with a valid session cookie but a foreign ``Origin`` on a write: ``403``;
- as user B against user A's conversation, session or device code: exactly the answer for a
  missing one (``404`` for conversations), or ``403 access_denied`` where the contract says
  so (a device code claimed by another user) — and A's resource is untouched afterwards.

Every WebSocket command (``subscribe``, ``unsubscribe``, ``send``, ``cancel``, ``ping``) is
sent as B naming A's conversation and naming a missing one: the answers are the same.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from server.core.ids import new_id, token_hash
from server.storage.tables import Session
from server.transports.protocol import ClientFrame
from tests.auth_helpers import bearer, fresh_ip, make_user_session, new_code, session_cookie
from tests.conftest import Live, live_app
from tests.live_clients import chat

FOREIGN = "http://evil.test"
#: A 1×1 PNG (A's attachment).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478"
    "9c63f8cfc0f01f00050001ff89993d1d0000000049454e44ae426082"
)
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Row:
    """How one route is authorized.

    ``access``: ``public`` (anyone), ``optional`` (answers without a user, e.g.
    ``get-session`` → ``null``), ``user`` (``401`` without one) or ``metrics`` (``401``
    without the operator's ``CERO_METRICS_TOKEN``: a session is no credential for it).
    ``owned``: which of A's resources the route names (``conversation``, ``session``,
    ``device``), ``None`` when it names none. ``body``: the JSON body, with ``$conv``,
    ``$session`` and ``$code`` replaced by the target's value; ``form`` likewise.
    ``foreign``: B against A's resource is ``same`` as a missing one, ``403``, or
    ``lookup`` (a device code's status, shown without its client_id and scope), or ``page``
    (the HTML page answers ``403``, like the JSON API, with the refusal's message and
    without the code's client_id).
    """

    access: str
    owned: str | None = None
    body: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    query: dict[str, str] = field(default_factory=dict)
    foreign: str = "same"


CONV = "/api/conversations/{id}"
MSG = CONV + "/messages/{messageId}"  # a message of that conversation (A's first)
ATT = "/api/attachments/{id}"  # one of A's attachments (an image)

#: Every (method, route) of the app. HEAD rows are the GET rows.
TABLE: dict[tuple[str, str], Row] = {
    ("GET", "/"): Row("public"),
    ("GET", "/healthz"): Row("public"),
    ("GET", "/readyz"): Row("public"),
    ("GET", "/metrics"): Row("metrics"),
    ("GET", "/openapi.json"): Row("public"),
    ("GET", "/api/models"): Row("public"),
    # Device flow: issuing and polling are anonymous (the device code is the credential).
    ("POST", "/api/auth/device/code"): Row("public", body={"client_id": "cero-cli"}),
    (
        "POST",
        "/api/auth/device/token",
    ): Row(
        "public",
        body={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": "x" * 43,
            "client_id": "cero-cli",
        },
    ),
    # A live code's status is shown to whoever holds the user code (the contract); its
    # client_id and scope only to the user who claimed it.
    ("GET", "/api/auth/device"): Row(
        "optional", owned="device", query={"user_code": "$code"}, foreign="lookup"
    ),
    ("POST", "/api/auth/device/approve"): Row(
        "user", owned="device", body={"userCode": "$code"}, foreign="403"
    ),
    ("POST", "/api/auth/device/deny"): Row(
        "user", owned="device", body={"userCode": "$code"}, foreign="403"
    ),
    # The HTML page: without a user it shows the sign-in prompt.
    ("GET", "/device"): Row("public", owned="device", query={"user_code": "$code"}, foreign="page"),
    ("POST", "/device"): Row(
        "public", owned="device", form={"user_code": "$code", "action": "approve"}, foreign="page"
    ),
    ("GET", "/api/auth/session"): Row("optional"),
    ("GET", "/api/auth/get-session"): Row("optional"),
    ("POST", "/api/auth/sign-out"): Row("optional", body={}),
    ("GET", "/api/auth/list-sessions"): Row("user"),
    ("POST", "/api/auth/revoke-session"): Row("user", owned="session", body={"id": "$session"}),
    ("POST", "/api/auth/revoke-other-sessions"): Row("user", body={}),
    ("POST", "/api/auth/sign-in/social"): Row(
        "public", body={"provider": "github", "callbackURL": "/app"}
    ),
    ("POST", "/api/auth/sign-in/github"): Row("public", body={"callbackURL": "/app"}),
    ("GET", "/auth/github"): Row("public"),
    ("GET", "/api/auth/callback/github"): Row("public", query={"code": "c", "state": "s"}),
    ("GET", "/auth/local"): Row("public", query={"token": "wrong"}),
    ("GET", "/api/user/whoami"): Row("user"),
    ("GET", "/app"): Row("public"),
    ("GET", "/app/{name}"): Row("public"),
    ("GET", "/app/vendor/{name}"): Row("public"),
    ("POST", "/api/chat"): Row(
        "user",
        owned="conversation",
        body={"message": "hi", "conversationId": "$conv", "aiModel": "demo"},
    ),
    ("GET", "/api/conversations"): Row("user"),
    ("GET", CONV + "/messages"): Row("user", owned="conversation"),
    ("PATCH", CONV): Row(
        "user", owned="conversation", body={"shortTitle": "taken", "instructions": "taken"}
    ),
    ("DELETE", CONV): Row("user", owned="conversation"),
    ("POST", CONV + "/cancel"): Row("user", owned="conversation", body={}),
    ("GET", CONV + "/events"): Row("user", owned="conversation"),
    ("GET", CONV + "/tree"): Row("user", owned="conversation"),
    ("POST", MSG + "/regenerate"): Row("user", owned="conversation", body={}),
    ("POST", MSG + "/edit"): Row("user", owned="conversation", body={"message": "taken"}),
    ("POST", MSG + "/continue"): Row("user", owned="conversation", body={}),
    ("POST", MSG + "/switch"): Row("user", owned="conversation", body={}),
    ("GET", CONV + "/export"): Row("user", owned="conversation"),
    ("GET", "/api/export"): Row("user"),
    ("POST", "/api/import"): Row(
        "user", body={"format": "cero-export", "version": 1, "conversations": []}
    ),
    # The caller's own instructions: they name no resource of anyone else's.
    ("GET", "/api/user/instructions"): Row("user"),
    ("PUT", "/api/user/instructions"): Row("user", body={"instructions": "be brief"}),
    # Likewise the caller's own preferences.
    ("GET", "/api/user/preferences"): Row("user"),
    ("PUT", "/api/user/preferences"): Row("user", body={"tools": ["google_search"]}),
    ("GET", "/api/search"): Row("user", query={"q": "mine"}),
    # The caller's own account channel: it names no resource of anyone else's.
    ("GET", "/api/account/events"): Row("user"),
    # Attachments: the upload names nothing of anyone else's (a JSON body here: refused
    # with 415 once signed in); a download or thumbnail of A's is B's 404, as a missing one.
    ("POST", "/api/attachments"): Row("user", body={}),
    ("GET", ATT): Row("user", owned="attachment"),
    ("GET", ATT + "/thumbnail"): Row("user", owned="attachment"),
    ("GET", "/api/ws"): Row("user"),  # the handshake; commands below
}

#: Every WebSocket command, naming a conversation (``$conv``) where it takes one.
WS_COMMANDS: dict[str, dict[str, Any]] = {
    "subscribe": {"type": "subscribe", "conversationId": "$conv"},
    "unsubscribe": {"type": "unsubscribe", "conversationId": "$conv"},
    "send": {"type": "send", "message": "hi", "conversationId": "$conv", "aiModel": "demo"},
    "cancel": {"type": "cancel", "conversationId": "$conv"},
    "switch": {"type": "switch", "conversationId": "$conv", "messageId": "$msg"},
    "ping": {"type": "ping"},
    # The account channel names no conversation: a user only ever reads their own.
    "watchaccount": {"type": "subscribe", "channel": "account"},
    "unwatchaccount": {"type": "unsubscribe", "channel": "account"},
}


@dataclass
class World:
    live: Live
    a_token: str
    b_token: str
    a_conv: str
    a_msg: str  # A's first message
    a_session: str
    a_code: str  # a device user code claimed by A
    a_attachment: str  # an image A uploaded


def _route_keys(live: Live) -> set[tuple[str, str]]:
    keys = set()
    for route in live.app.router.routes():
        method = "GET" if route.method == "HEAD" else route.method
        keys.add((method, route.resource.canonical if route.resource else ""))
    return keys


def _fill(value: Any, target: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, target) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("$"):
        return target[value[1:]]
    return value


def _path(route: str, target: dict[str, str]) -> str:
    if route.startswith("/api/attachments/"):
        return route.replace("{id}", target["attachment"])
    return (
        route.replace("{id}", target["conv"])
        .replace("{messageId}", target["msg"])
        .replace("{name}", "app.js")
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(database_url: str) -> AsyncIterator[World]:
    async with live_app(
        database_url, trusted_proxies=["127.0.0.1/32"], device_code_limit=1000
    ) as live:
        a_token, _ = await make_user_session("Alice")
        b_token, _ = await make_user_session("Bob")
        async with aiohttp.ClientSession() as http:
            lines = await chat(http, live.url, a_token, message="mine", aiModel="demo")
            assert lines[-1]["topic"] == "done", lines[-1]
            a_conv = lines[0]["data"]["conversationId"]
            a_msg = lines[0]["data"]["userMessageId"]
            async with http.get(
                live.url + "/api/auth/list-sessions", headers=bearer(a_token)
            ) as resp:
                a_session = next(s["id"] for s in await resp.json() if s["current"])
            code = (await new_code(http, live))["user_code"]
            async with http.get(
                live.url + "/api/auth/device",
                params={"user_code": code},
                headers={**bearer(a_token), **fresh_ip()},
            ) as resp:
                assert resp.status == 200 and "client_id" in await resp.json()
            form = aiohttp.FormData()
            form.add_field("file", PNG, filename="a.png", content_type="image/png")
            async with http.post(
                live.url + "/api/attachments", data=form, headers=bearer(a_token)
            ) as resp:
                assert resp.status == 201, await resp.text()
                a_attachment = (await resp.json())["attachment"]["id"]
        yield World(live, a_token, b_token, a_conv, a_msg, a_session, code, a_attachment)


async def _dead_tokens(http: aiohttp.ClientSession, live: Live) -> dict[str, str]:
    """Fresh expired, revoked and signed-out bearer tokens: an expired session's row is
    deleted when it is first presented, so each test makes its own."""
    expired, _ = await make_user_session("Expired")
    await (
        Session.update({Session.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
        .where(Session.token_hash == token_hash(expired))
        .run()
    )
    revoked, _ = await make_user_session("Revoked")
    async with http.post(
        live.url + "/api/auth/revoke-session", json={"token": revoked}, headers=bearer(revoked)
    ) as resp:
        assert resp.status == 200
    signed_out, _ = await make_user_session("SignedOut")
    async with http.post(live.url + "/api/auth/sign-out", headers=bearer(signed_out)) as resp:
        assert resp.status == 200
    return {"expired": expired, "revoked": revoked, "signed-out": signed_out}


async def _call(
    http: aiohttp.ClientSession,
    w: World,
    key: tuple[str, str],
    target: dict[str, str],
    headers: dict[str, str],
) -> tuple[int, str, bytes]:
    method, route = key
    row = TABLE[key]
    kwargs: dict[str, Any] = {"headers": {**headers, **fresh_ip()}, "allow_redirects": False}
    if row.query:
        kwargs["params"] = _fill(row.query, target)
    if row.body is not None:
        kwargs["json"] = _fill(row.body, target)
    if row.form is not None:
        kwargs["data"] = _fill(row.form, target)
    if route == "/api/ws":
        kwargs["headers"] = {**kwargs["headers"], "Accept": "application/json"}
    if route.endswith("/events"):
        kwargs["headers"]["Accept"] = "text/event-stream"
    async with http.request(method, w.live.url + _path(route, target), **kwargs) as resp:
        ctype = resp.headers.get("Content-Type", "")
        if "event-stream" in ctype:
            return resp.status, ctype, b""  # a live stream: its status is the answer
        return resp.status, ctype, await resp.read()


def _targets(w: World) -> tuple[dict[str, str], dict[str, str]]:
    a = {
        "conv": w.a_conv,
        "msg": w.a_msg,
        "session": w.a_session,
        "code": w.a_code,
        "attachment": w.a_attachment,
    }
    missing = {
        "conv": new_id(),
        "msg": new_id(),
        "session": new_id(),
        "code": "BCDF-GHJK",
        "attachment": new_id(),
    }
    return a, missing


async def test_every_route_is_in_the_table(world: World) -> None:
    routes = _route_keys(world.live)
    assert routes - TABLE.keys() == set(), "routes with no row in the authorization table"
    assert TABLE.keys() - routes == set(), "rows for routes the app does not have"
    commands = {kind.__name__.lower() for kind in typing.get_args(ClientFrame)}
    assert commands == WS_COMMANDS.keys()


@pytest.mark.parametrize("key", sorted(TABLE), ids=lambda k: f"{k[0]} {k[1]}")
async def test_without_a_valid_credential(world: World, key: tuple[str, str]) -> None:
    row = TABLE[key]
    _, missing = _targets(world)
    async with aiohttp.ClientSession() as http:
        dead = await _dead_tokens(http, world.live)
        for name, headers in [("none", {}), *((n, bearer(t)) for n, t in dead.items())]:
            status, ctype, body = await _call(http, world, key, missing, headers)
            assert status < 500, (name, status, body)
            if row.access in ("user", "metrics"):
                assert status == 401, (name, status, body)
                assert ctype.startswith("application/json"), (name, ctype)
                answer = orjson.loads(body)
                if key[1].startswith("/api/auth/"):
                    assert answer["error"] == "unauthorized", answer
                else:
                    assert answer["code"] == "unauthorized", answer
            else:
                assert status != 401, (name, status, body)
            if key[1] == "/api/auth/get-session":
                assert orjson.loads(body) is None


@pytest.mark.parametrize(
    "key", sorted(k for k in TABLE if k[0] in UNSAFE), ids=lambda k: f"{k[0]} {k[1]}"
)
async def test_cookie_write_from_a_foreign_origin(world: World, key: tuple[str, str]) -> None:
    a, _ = _targets(world)
    cookie = session_cookie(world.live.settings, world.b_token)
    async with aiohttp.ClientSession() as http:
        for extra in ({"Origin": FOREIGN}, {"Referer": FOREIGN + "/x"}, {}):
            status, _, body = await _call(http, world, key, a, {**cookie, **extra})
            assert status == 403, (extra, status, body)


@pytest.mark.parametrize(
    "key", sorted(k for k in TABLE if TABLE[k].owned), ids=lambda k: f"{k[0]} {k[1]}"
)
async def test_user_b_against_user_a(world: World, key: tuple[str, str]) -> None:
    row = TABLE[key]
    a, missing = _targets(world)
    async with aiohttp.ClientSession() as http:
        b = bearer(world.b_token)
        theirs = await _call(http, world, key, a, b)
        none = await _call(http, world, key, missing, b)
        if row.foreign == "403":
            assert theirs[0] == 403, theirs
            if key[1].startswith("/api/"):
                assert orjson.loads(theirs[2])["error"] == "access_denied", theirs
        elif row.foreign == "page":
            assert theirs[0] == 403 and b'class="error"' in theirs[2], theirs
            assert b"cero-cli" not in theirs[2], theirs
        elif row.foreign == "lookup":
            assert theirs[0] == 200, theirs
            assert b"cero-cli" not in theirs[2] and b"client_id" not in theirs[2], theirs
            assert b"another account" in theirs[2] or b"pending" in theirs[2], theirs
        else:
            assert theirs == none, (theirs, none)
            if row.owned in ("conversation", "attachment"):
                assert theirs[0] == 404, theirs
        await _a_is_untouched(http, world)


async def _a_is_untouched(http: aiohttp.ClientSession, w: World) -> None:
    a = bearer(w.a_token)
    async with http.get(w.live.url + f"/api/conversations/{w.a_conv}/messages", headers=a) as r:
        assert r.status == 200, await r.text()
        data = await r.json()
    assert data["conversation"]["shortTitle"] == "mine"
    assert "instructions" not in data["conversation"]  # A set none; B's PATCH set none
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    async with http.get(w.live.url + "/api/auth/device", params={"user_code": w.a_code}) as r:
        # Anonymous lookup: still pending (B neither approved nor denied it).
        assert r.status == 200 and (await r.json())["status"] == "pending"


async def test_lists_show_only_ones_own(world: World) -> None:
    b = bearer(world.b_token)
    async with aiohttp.ClientSession() as http:
        async with http.get(world.live.url + "/api/conversations", headers=b) as resp:
            ids = [c["id"] for c in (await resp.json())["conversations"]]
        assert world.a_conv not in ids
        async with http.get(world.live.url + "/api/auth/list-sessions", headers=b) as resp:
            sessions = [s["id"] for s in await resp.json()]
        assert world.a_session not in sessions and len(sessions) == 1
        async with http.get(
            world.live.url + "/api/auth/device", params={"user_code": world.a_code}, headers=b
        ) as resp:
            seen = await resp.json()
        assert "client_id" not in seen and "scope" not in seen, seen


# -- WebSocket -----------------------------------------------------------------------------


async def _ws_answer(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> Any:
    """The first frame the server sends back for ``frame``, ids masked."""
    await ws.send_str(orjson.dumps(frame).decode())
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    answer = orjson.loads(message.data)
    for key in ("conversationId", "requestId"):
        if key in answer:
            answer[key] = "<id>"
    return answer


@pytest.mark.parametrize("command", sorted(WS_COMMANDS))
async def test_ws_command_as_user_b(world: World, command: str) -> None:
    a, missing = _targets(world)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(world.live.url + "/api/ws", headers=bearer(world.b_token)) as ws:
            theirs = await _ws_answer(ws, _fill(WS_COMMANDS[command], a))
            none = await _ws_answer(ws, _fill(WS_COMMANDS[command], missing))
        assert theirs == none, (theirs, none)
        if "conversationId" in WS_COMMANDS[command] and command != "unsubscribe":
            assert theirs["type"] == "fault" and theirs["code"] == "not_found", theirs
        await _a_is_untouched(http, world)


async def test_ws_handshake_without_a_valid_credential(world: World) -> None:
    url = world.live.url + "/api/ws"
    cookie = session_cookie(world.live.settings, world.b_token)
    async with aiohttp.ClientSession() as http:
        attempts: list[tuple[str, dict[str, Any], int]] = [("none", {}, 401)]
        for name, token in (await _dead_tokens(http, world.live)).items():
            attempts.append((name, {"headers": bearer(token)}, 401))
        for name, token in (await _dead_tokens(http, world.live)).items():
            attempts.append((name + " ?token", {"params": {"token": token}}, 401))
        for name, token in (await _dead_tokens(http, world.live)).items():
            attempts.append((name + " subprotocol", {"protocols": (f"bearer.{token}",)}, 401))
        attempts.append(("cookie, foreign origin", {"headers": {**cookie, "Origin": FOREIGN}}, 403))
        attempts.append(("cookie, no origin", {"headers": cookie}, 403))
        for name, kwargs, status in attempts:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await http.ws_connect(url, **kwargs)
            assert caught.value.status == status, name
