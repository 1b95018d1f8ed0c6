"""Every chat and conversation endpoint against bad input: malformed JSON, wrong types,
huge bodies, another owner, missing and expired credentials — a clear 4xx, never a 500,
and nothing lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import pytest_asyncio

from server.core.ids import token_hash
from server.storage.tables import Conversation, Message, Session
from tests.auth_helpers import bearer, make_user_session, session_cookie
from tests.conftest import Live
from tests.live_clients import chat

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    live: Live
    owner: str
    other: str
    expired: str
    conversation_id: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(live: Live) -> AsyncIterator[Env]:
    e = Env()
    e.live = live
    e.owner, _ = await make_user_session("Owner")
    e.other, _ = await make_user_session("Other")
    e.expired, _ = await make_user_session("Expired")
    await (
        Session.update({Session.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
        .where(Session.token_hash == token_hash(e.expired))
        .run()
    )
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, e.live.url, e.owner, message="keep me", aiModel="demo")
        e.conversation_id = lines[0]["data"]["conversationId"]
    yield e


def endpoints(cid: str) -> list[tuple[str, str, bool]]:
    """(method, path, takes a JSON body)."""
    return [
        ("POST", "/api/chat", True),
        ("GET", "/api/conversations", False),
        ("GET", f"/api/conversations/{cid}/messages", False),
        ("GET", f"/api/conversations/{cid}/events", False),
        ("PATCH", f"/api/conversations/{cid}", True),
        ("DELETE", f"/api/conversations/{cid}", False),
        ("POST", f"/api/conversations/{cid}/cancel", True),
        ("GET", "/api/user/whoami", False),
    ]


async def test_missing_invalid_and_expired_credentials(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, _ in endpoints(env.conversation_id):
            for headers in ({}, bearer("garbage"), bearer(env.expired)):
                async with http.request(method, env.live.url + path, json={}, headers=headers) as r:
                    assert r.status == 401, (method, path, headers)
                    assert await r.json() == {"error": "Unauthorized", "code": "unauthorized"}


async def test_malformed_wrong_types_and_huge_bodies(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, has_body in endpoints(env.conversation_id):
            if not has_body:
                continue
            for raw in (
                b"{oops",
                b'"a string"',
                b"[]",
                b'{"message": [], "shortTitle": 3, "generationId": {}}',
            ):
                async with http.request(
                    method,
                    env.live.url + path,
                    data=raw,
                    headers={**bearer(env.owner), "Content-Type": "application/json"},
                ) as r:
                    assert r.status == 400, (method, path, raw, await r.text())
                    body = await r.json()
                    assert body["code"] in ("invalid_json", "invalid_request"), body
            async with http.request(
                method,
                env.live.url + path,
                data=b"{" + b" " * (2 << 20) + b"}",
                headers={**bearer(env.owner), "Content-Type": "application/json"},
            ) as r:
                assert r.status == 413, (method, path)
                assert (await r.json())["code"] == "payload_too_large"


async def test_wrong_owner_is_404_and_changes_nothing(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, _ in endpoints(env.conversation_id):
            if "{" in path or env.conversation_id not in path:
                continue
            async with http.request(
                method, env.live.url + path, json={"shortTitle": "mine"}, headers=bearer(env.other)
            ) as r:
                assert r.status == 404, (method, path)
    row = await Conversation.select().where(Conversation.id == env.conversation_id).first().run()
    assert row is not None and row["short_title"] == "keep me"
    assert (
        len(await Message.select().where(Message.conversation_id == env.conversation_id).run()) == 2
    )


async def test_cookie_writes_need_a_trusted_origin(env: Env) -> None:
    cookie = session_cookie(env.live.settings, env.owner)
    path = f"{env.live.url}/api/conversations/{env.conversation_id}"
    async with aiohttp.ClientSession() as http:
        for origin in ({}, {"Origin": "https://evil.example"}):
            async with http.patch(
                path, json={"shortTitle": "csrf"}, headers={**cookie, **origin}
            ) as r:
                assert r.status == 403
        async with http.patch(
            path,
            json={"shortTitle": "ok"},
            headers={**cookie, "Origin": env.live.settings.public_url},
        ) as r:
            assert r.status == 200
        async with http.get(path + "/messages", headers=cookie) as r:  # reads need no Origin
            assert r.status == 200


async def test_nul_characters_and_odd_queries_are_400(env: Env) -> None:
    import base64

    import orjson

    h = bearer(env.owner)
    base = env.live.url
    cid = env.conversation_id
    bad_cursors = [
        base64.urlsafe_b64encode(orjson.dumps([stamp, "x"])).decode().rstrip("=")
        for stamp in (
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-01-01T00:00:00",
            "not a time",
        )
    ] + ["%%%", "e30"]
    async with aiohttp.ClientSession() as http:
        for body in (
            {"message": "a\u0000b"},
            {"message": "ok", "clientMessageId": "k\u0000"},
            {"message": "ok", "conversationId": cid + "\u0000"},
        ):
            async with http.post(base + "/api/chat", json=body, headers=h) as r:
                assert r.status == 400, (body, await r.text())
        async with http.patch(
            f"{base}/api/conversations/{cid}", json={"shortTitle": "\u0000"}, headers=h
        ) as r:
            assert r.status == 400
        for limit in ("\u00b2", "0", "101", "-1", "1.5", ""):
            async with http.get(f"{base}/api/conversations?limit={limit}", headers=h) as r:
                assert r.status == 400, limit
        for cursor in bad_cursors:
            async with http.get(f"{base}/api/conversations?cursor={cursor}", headers=h) as r:
                assert r.status == 400, cursor
    rows = await Message.select().where(Message.conversation_id == cid).run()
    assert len(rows) == 2
