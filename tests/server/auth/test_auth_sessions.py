"""Sessions over real HTTP: get-session, sign-out, list/revoke, sliding, cookies, CSRF."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import aiohttp
import pytest

from server.auth.cookies import sign_value
from server.auth.sessions import SESSIONS, SessionStore
from server.core.ids import token_hash
from server.storage.tables import Session
from tests.auth_helpers import (
    bearer,
    codec,
    cookie_header,
    make_user_session,
    session_cookie,
    set_cookies,
)
from tests.conftest import Live, live_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def session_row(token: str) -> dict[str, object]:
    rows = await Session.select().where(Session.token_hash == token_hash(token)).run()
    return dict(rows[0]) if rows else {}


async def test_cookie_signature_matches_better_auth() -> None:
    # The test vector from tests/compat/NOTES.md (checked against better-call).
    secret = "better-auth-secret-123456789012345"
    token = "6X3hTDNqpbIhKpV1YcUpVz5hT0Wd4eAq"
    signed = sign_value(secret, token)
    assert quote(signed, safe="-_.!~*'()") == (
        "6X3hTDNqpbIhKpV1YcUpVz5hT0Wd4eAq.8nuOZO42OBLzIkbeSYqROMgRViFj0El96KEWAJXE5cY%3D"
    )


async def test_get_session_shapes(live: Live) -> None:
    token, user_id = await make_user_session("Ada", "ada@example.test")
    async with aiohttp.ClientSession() as http:
        for path in ("/api/auth/get-session", "/api/auth/session"):
            async with http.get(live.url + path, headers=bearer(token)) as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "no-store"
                body = await resp.json()
            assert set(body) == {"session", "user"}
            session, user = body["session"], body["user"]
            assert set(session) == {"id", "userId", "expiresAt", "createdAt", "updatedAt"}
            assert session["userId"] == user_id
            for key in ("expiresAt", "createdAt", "updatedAt"):
                assert ISO_Z.match(session[key]), session[key]
            assert user == {
                "id": user_id,
                "name": "Ada",
                "email": "ada@example.test",
                "image": None,
                "emailVerified": True,
            }
            for headers in ({}, bearer("nope"), bearer(token + "x"), {"Authorization": "Bearer"}):
                async with http.get(live.url + path, headers=headers) as resp:
                    assert resp.status == 200
                    assert await resp.json() is None


async def test_whoami(live: Live) -> None:
    token, user_id = await make_user_session("Linus", "linus@example.test")
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert await resp.json() == {
                "user": {
                    "id": user_id,
                    "name": "Linus",
                    "email": "linus@example.test",
                    "image": None,
                }
            }
        for headers in ({}, bearer("bad"), {"Authorization": "Basic eDp5"}):
            async with http.get(live.url + "/api/user/whoami", headers=headers) as resp:
                assert resp.status == 401
                assert await resp.json() == {"error": "Unauthorized", "code": "unauthorized"}


async def test_bearer_accepts_better_auth_signed_form(live: Live) -> None:
    token, user_id = await make_user_session()
    signed = sign_value(live.settings.auth_secret, token)
    forged = sign_value("another-secret-of-enough-length", token)
    async with aiohttp.ClientSession() as http:
        for value in (signed, quote(signed, safe="")):
            async with http.get(live.url + "/api/user/whoami", headers=bearer(value)) as resp:
                assert resp.status == 200
                assert (await resp.json())["user"]["id"] == user_id
        async with http.get(live.url + "/api/user/whoami", headers=bearer(forged)) as resp:
            assert resp.status == 401
        async with http.get(
            live.url + "/api/user/whoami", headers={"Authorization": f"bearer {token}"}
        ) as resp:
            assert resp.status == 200  # the scheme is case-insensitive


async def test_sign_out_takes_effect_for_bearer_at_once(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        async with http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as resp:
            assert resp.status == 200
            assert await resp.json() == {"success": True}
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 401
        async with http.get(live.url + "/api/auth/get-session", headers=bearer(token)) as resp:
            assert await resp.json() is None
        # Signing out without a session is harmless.
        async with http.post(live.url + "/api/auth/sign-out") as resp:
            assert resp.status == 200
    assert await session_row(token) == {}


async def test_list_and_revoke_sessions(live: Live) -> None:
    first, user_id = await make_user_session()
    other, _ = await make_user_session()
    # A second and third session of the same user.
    from server.auth.sessions import SessionStore

    second, _ = await SessionStore().start(user_id, ip_address="10.0.0.9", user_agent="phone")
    third, _ = await SessionStore().start(user_id)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            live.url + "/api/auth/list-sessions", headers={**bearer(first), "User-Agent": "ua"}
        ) as resp:
            assert resp.status == 200
            listed = await resp.json()
        assert len(listed) == 3
        assert all(
            set(s)
            == {"id", "createdAt", "updatedAt", "expiresAt", "ipAddress", "userAgent", "current"}
            for s in listed
        )
        assert [s["current"] for s in listed].count(True) == 1
        second_id = str((await session_row(second))["id"])
        other_id = str((await session_row(other))["id"])
        assert {s["id"]: s["ipAddress"] for s in listed}[second_id] == "10.0.0.9"

        # Revoke by id: the bearer fails at once.
        async with http.post(
            live.url + "/api/auth/revoke-session", json={"id": second_id}, headers=bearer(first)
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": True}
        async with http.get(live.url + "/api/user/whoami", headers=bearer(second)) as resp:
            assert resp.status == 401
        # Revoke by token (Better Auth's form).
        async with http.post(
            live.url + "/api/auth/revoke-session", json={"token": third}, headers=bearer(first)
        ) as resp:
            assert resp.status == 200
        async with http.get(live.url + "/api/user/whoami", headers=bearer(third)) as resp:
            assert resp.status == 401
        # Another user's session: same answer, nothing revoked.
        async with http.post(
            live.url + "/api/auth/revoke-session", json={"id": other_id}, headers=bearer(first)
        ) as resp:
            assert (resp.status, await resp.json()) == (200, {"status": True})
        async with http.get(live.url + "/api/user/whoami", headers=bearer(other)) as resp:
            assert resp.status == 200
        # Bad input and no credential.
        for body in ({}, {"id": 5}, {"token": ["x"]}):
            async with http.post(
                live.url + "/api/auth/revoke-session", json=body, headers=bearer(first)
            ) as resp:
                assert resp.status == 400, body
                assert "error_description" in await resp.json()
        async with http.post(live.url + "/api/auth/revoke-session", json={"id": other_id}) as r:
            assert r.status == 401
        async with http.get(live.url + "/api/auth/list-sessions") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"


async def test_session_slides_after_a_day(live: Live) -> None:
    token, _ = await make_user_session()
    now = datetime.now(UTC)
    digest = token_hash(token)
    await (
        Session.update(
            {
                Session.updated_at: now - timedelta(days=2),
                Session.expires_at: now + timedelta(days=5),
            }
        )
        .where(Session.token_hash == digest)
        .run()
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 200
    row = await session_row(token)
    expires_at = row["expires_at"]
    updated_at = row["updated_at"]
    assert isinstance(expires_at, datetime) and isinstance(updated_at, datetime)
    assert expires_at > now + timedelta(days=6, hours=23)
    assert updated_at >= now - timedelta(seconds=5)

    # Used again within the day: no write.
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 200
    assert (await session_row(token))["updated_at"] == updated_at


async def test_slid_cookie_session_gets_its_cookie_again(live: Live) -> None:
    """The session slid to 7 more days: the browser's cookie must too, or it would drop
    the cookie 7 days after sign-in while the session lives on."""
    fresh, _ = await make_user_session()
    token, _ = await make_user_session()
    names = codec(live.settings)
    async with aiohttp.ClientSession() as http:
        # Not due to slide: only the cache cookie is set, the session cookie is left alone.
        async with http.get(
            live.url + "/api/user/whoami", headers=session_cookie(live.settings, fresh)
        ) as resp:
            assert resp.status == 200
            assert names.session_name not in set_cookies(resp)
        # A session last refreshed two days ago (made so before its first use: the process
        # remembers what it looked up).
        now = datetime.now(UTC)
        await (
            Session.update(
                {
                    Session.updated_at: now - timedelta(days=2),
                    Session.expires_at: now + timedelta(days=5),
                }
            )
            .where(Session.token_hash == token_hash(token))
            .run()
        )
        async with http.get(
            live.url + "/api/user/whoami", headers=session_cookie(live.settings, token)
        ) as resp:
            assert resp.status == 200
            morsels = set_cookies(resp)
        session = morsels[names.session_name]
        assert session.value == names.session_value(token)
        assert session["max-age"] == "604800"
        assert session["httponly"] and session["samesite"] == "Lax" and session["path"] == "/"
        assert names.cache_name in morsels
    row = await session_row(token)
    expires_at = row["expires_at"]
    assert isinstance(expires_at, datetime)
    assert expires_at > now + timedelta(days=6, hours=23)


async def test_expired_session_is_refused_and_removed(live: Live) -> None:
    token, _ = await make_user_session()
    await (
        Session.update({Session.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
        .where(Session.token_hash == token_hash(token))
        .run()
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 401
    assert await session_row(token) == {}


async def test_cookie_session_and_its_cache(database_url: str) -> None:
    """The cache cookie lets cookie requests skip the database for up to 5 minutes.

    Documented consequence: a session deleted by *another* process stays usable through a
    fresh cache cookie for at most those 5 minutes; a revocation through this process takes
    effect at once, and so does every bearer call when the process keeps no memory of
    sessions (``CERO_AUTH_CACHE_SECONDS=0``, what processes sharing a database without
    cluster mode should run with; the default is tested below).
    """
    async with live_app(database_url, auth_cache_seconds=0) as live:
        await _cookie_cache_checks(live)


async def _cookie_cache_checks(live: Live) -> None:
    token, user_id = await make_user_session()
    names = codec(live.settings)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            live.url + "/api/user/whoami", headers=session_cookie(live.settings, token)
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["user"]["id"] == user_id
            morsels = set_cookies(resp)
        cache = morsels[names.cache_name]
        assert cache["max-age"] == "300" and cache["httponly"] and cache["samesite"] == "Lax"
        both = {
            names.session_name: names.session_value(token),
            names.cache_name: cache.value,
        }
        # Delete the row behind the server's back (as another process would).
        await Session.delete().where(Session.token_hash == token_hash(token)).run()
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 401  # bearer: at once
        async with http.get(live.url + "/api/user/whoami", headers=cookie_header(both)) as resp:
            assert resp.status == 200  # cookie + cache: within the 5-minute window
        async with http.get(
            live.url + "/api/user/whoami", headers=session_cookie(live.settings, token)
        ) as resp:
            assert resp.status == 401  # cookie without cache: the database says no
            cleared = set_cookies(resp)
            assert cleared[names.session_name]["max-age"] == "0"

        # A cache cookie never vouches for another session token.
        other, _ = await make_user_session()
        stolen = {
            names.session_name: names.session_value(other + "x"),
            names.cache_name: cache.value,
        }
        async with http.get(live.url + "/api/user/whoami", headers=cookie_header(stolen)) as resp:
            assert resp.status == 401
        mixed = {names.session_name: names.session_value(other), names.cache_name: cache.value}
        async with http.get(live.url + "/api/user/whoami", headers=cookie_header(mixed)) as resp:
            assert resp.status == 200
            assert (await resp.json())["user"]["id"] != user_id

        # Revoked through this process: the cache dies at once too.
        fresh, _ = await make_user_session()
        async with http.get(
            live.url + "/api/user/whoami", headers=session_cookie(live.settings, fresh)
        ) as resp:
            fresh_cache = set_cookies(resp)[names.cache_name].value
        jar = {names.session_name: names.session_value(fresh), names.cache_name: fresh_cache}
        async with http.post(live.url + "/api/auth/sign-out", headers=bearer(fresh)) as resp:
            assert resp.status == 200
        async with http.get(live.url + "/api/user/whoami", headers=cookie_header(jar)) as resp:
            assert resp.status == 401


async def test_csrf_applies_to_cookie_requests_on_every_route(live: Live) -> None:
    token, _ = await make_user_session()
    cookie = session_cookie(live.settings, token)
    own = live.settings.public_url
    async with aiohttp.ClientSession() as http:
        # Not an auth route: the generic shape.
        async with http.post(live.url + "/api/not-a-route", headers=cookie) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == "forbidden"
        async with http.delete(
            live.url + "/api/not-a-route", headers={**cookie, "Origin": "http://evil.test"}
        ) as resp:
            assert resp.status == 403
        async with http.post(
            live.url + "/api/not-a-route", headers={**cookie, "Origin": own}
        ) as resp:
            assert resp.status == 404
        # Bearer requests are exempt; GET is not a state change.
        async with http.post(live.url + "/api/not-a-route", headers=bearer(token)) as resp:
            assert resp.status == 404
        async with http.get(live.url + "/api/user/whoami", headers=cookie) as resp:
            assert resp.status == 200
        # Sign-out by cookie needs the origin too.
        async with http.post(live.url + "/api/auth/sign-out", headers=cookie) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "invalid_origin"
        async with http.post(
            live.url + "/api/auth/sign-out", headers={**cookie, "Origin": own}
        ) as resp:
            assert resp.status == 200
            assert set_cookies(resp)[codec(live.settings).session_name]["max-age"] == "0"
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 401


async def test_concurrent_lookups_of_one_token_share_one_query(live: Live) -> None:
    """Single flight: lookups of one token at once get the one answer of one query (the
    same object); after it, a new lookup asks again; a revocation is never hidden."""
    store = live.app[SESSIONS]
    token, _ = await make_user_session("Burst")
    shared = await asyncio.gather(*(store.resolve(token) for _ in range(50)))
    assert shared[0] is not None and all(found is shared[0] for found in shared)
    again = await store.resolve(token)
    assert again == shared[0]  # remembered (CERO_AUTH_CACHE_SECONDS), not asked again
    in_flight = asyncio.ensure_future(store.resolve(token))
    await asyncio.sleep(0)  # its query has started
    await store.revoke(shared[0].session.id)
    # A lookup after the revocation never joins a query that started before it.
    assert await store.resolve(token) is None
    await in_flight  # started before the revocation: either answer is right


async def test_a_remembered_session_lives_no_longer_than_its_revocation(live: Live) -> None:
    """The process remembers a looked-up session (``CERO_AUTH_CACHE_SECONDS``): a row
    deleted behind its back is still honoured from memory, a revocation through the store
    is not, at once; with no memory, the database decides every time."""
    token, _ = await make_user_session("Memory")
    store = SessionStore()
    found = await store.resolve(token)
    assert found is not None
    await Session.delete().where(Session.id == found.session.id).run()
    assert await store.resolve(token) == found  # from memory: the row is gone
    await store.revoke(found.session.id)
    assert await store.resolve(token) is None

    token, _ = await make_user_session("NoMemory")
    forgetful = SessionStore(cache_seconds=0)
    found = await forgetful.resolve(token)
    assert found is not None
    await Session.delete().where(Session.id == found.session.id).run()
    assert await forgetful.resolve(token) is None

    # Over HTTP: signed out on one device, the bearer token is refused at the next call.
    token, _ = await make_user_session("SignOut")
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
                assert resp.status == 200
        async with http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as resp:
            assert resp.status == 200
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 401
