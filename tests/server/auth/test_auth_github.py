"""GitHub sign-in over real HTTP against the GitHub stand-in (standins/github.py)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from server.storage.tables import Account
from standins.github import FakeGitHub, FakeUser
from tests.auth_helpers import bearer, codec, cookie_header, set_cookies
from tests.conftest import Live, live_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIENT_ID = "Iv1.cero-tests"
CLIENT_SECRET = "gh-secret-for-tests"
TRUSTED = "https://app.example"


@dataclass
class Env:
    live: Live
    gh: FakeGitHub


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[Env]:
    gh = FakeGitHub(CLIENT_ID, CLIENT_SECRET)
    await gh.start()
    try:
        async with live_app(
            database_url,
            github_client_id=CLIENT_ID,
            github_client_secret=CLIENT_SECRET,
            github_url=gh.web_url,
            github_api_url=gh.api_url,
            trusted_origins_setting=[TRUSTED],
        ) as live:
            gh.registered_redirect_uri = f"{live.settings.public_url}/api/auth/callback/github"
            yield Env(live=live, gh=gh)
    finally:
        await gh.stop()


@dataclass
class Started:
    url: str
    state_cookie: dict[str, str]
    query: dict[str, str]


async def start(
    http: aiohttp.ClientSession, env: Env, body: dict[str, Any], path: str = "social"
) -> Started:
    async with http.post(env.live.url + f"/api/auth/sign-in/{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        assert data["redirect"] is True
        name = codec(env.live.settings).state_name
        state = set_cookies(resp)[name].value
    query = {k: v[0] for k, v in parse_qs(urlsplit(data["url"]).query).items()}
    return Started(url=data["url"], state_cookie={name: state}, query=query)


async def at_github(http: aiohttp.ClientSession, url: str) -> str:
    """Follow the authorize URL at the stand-in; return the callback URL it redirects to."""
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        return resp.headers["Location"]


async def callback(
    http: aiohttp.ClientSession, env: Env, location: str, cookies: dict[str, str]
) -> aiohttp.ClientResponse:
    path = urlsplit(location)
    async with http.get(
        env.live.url + path.path + "?" + path.query,
        headers=cookie_header(cookies),
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp


async def sign_in(
    http: aiohttp.ClientSession, env: Env, callback_url: str = "/after"
) -> tuple[str, aiohttp.ClientResponse]:
    started = await start(http, env, {"provider": "github", "callbackURL": callback_url})
    location = await at_github(http, started.url)
    resp = await callback(http, env, location, started.state_cookie)
    assert resp.status == 302, resp.headers
    return resp.headers["set-auth-token"], resp


async def test_full_flow_with_pkce(env: Env) -> None:
    env.gh.requests.clear()
    async with aiohttp.ClientSession() as http:
        started = await start(http, env, {"provider": "github", "callbackURL": "/after"})
        q = started.query
        assert started.url.startswith(env.gh.web_url + "/login/oauth/authorize?")
        assert q["client_id"] == CLIENT_ID
        assert q["redirect_uri"] == f"{env.live.settings.public_url}/api/auth/callback/github"
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert set(q["scope"].split()) == {"read:user", "user:email"}
        assert len(q["state"]) >= 32
        name = codec(env.live.settings).state_name
        location = await at_github(http, started.url)
        resp = await callback(http, env, location, started.state_cookie)
        assert resp.status == 302
        assert resp.headers["Location"] == "/after"
        cookies = set_cookies(resp)
        names = codec(env.live.settings)
        session = cookies[names.session_name]
        assert session["httponly"] and session["samesite"] == "Lax" and session["path"] == "/"
        assert session["max-age"] == "604800" and not session["secure"]
        assert cookies[name]["max-age"] == "0"  # the state cookie is spent
        token = resp.headers["set-auth-token"]
        assert names.token_from_cookie(session.value) == token

        async with http.get(env.live.url + "/api/user/whoami", headers=bearer(token)) as who:
            assert (await who.json())["user"] | {"id": None} == {
                "id": None,
                "name": "The Octocat",
                "email": "octocat@example.com",
                "image": "https://avatars.githubusercontent.com/u/1001?v=4",
            }
        # The cookie works too.
        async with http.get(
            env.live.url + "/api/auth/get-session",
            headers=cookie_header({names.session_name: session.value}),
        ) as got:
            body = await got.json()
            assert body["user"]["emailVerified"] is True

    exchange = env.gh.requests_to("/login/oauth/access_token")[-1]
    assert exchange.headers["Accept"] == "application/json"
    form = parse_qs(exchange.body)
    verifier = form["code_verifier"][0]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == q["code_challenge"]
    assert env.gh.requests_to("/user/emails"), "the e-mail comes from /user/emails"


async def test_state_is_single_use_and_bound_to_the_cookie(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        started = await start(http, env, {"provider": "github", "callbackURL": "/after"})
        location = await at_github(http, started.url)
        # Without the browser's state cookie: refused.
        resp = await callback(http, env, location, {})
        assert resp.status == 400
        assert "set-auth-token" not in resp.headers
        # With another sign-in's cookie: refused.
        other = await start(http, env, {"provider": "github", "callbackURL": "/after"})
        resp = await callback(http, env, location, other.state_cookie)
        assert resp.status == 302 and "error=state_mismatch" in resp.headers["Location"]
        assert "set-auth-token" not in resp.headers

        first = await callback(http, env, location, started.state_cookie)
        assert first.status == 302 and first.headers["Location"] == "/after"
        # Replayed: the same callback, and a fresh GitHub code for the same state.
        again = await callback(http, env, location, started.state_cookie)
        assert again.status == 302 and "error=state_mismatch" in again.headers["Location"]
        assert "set-auth-token" not in again.headers
        fresh_location = await at_github(http, started.url)
        again = await callback(http, env, fresh_location, started.state_cookie)
        assert "error=state_mismatch" in again.headers["Location"]
        assert "set-auth-token" not in again.headers


async def test_open_redirects_are_refused(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        for target in (
            "https://evil.example/x",
            "//evil.example/x",
            "/\\evil.example",
            "javascript:alert(1)",
            "https://app.example.evil.example/",
            "http://app.example/",  # the trusted origin is https
        ):
            async with http.post(
                env.live.url + "/api/auth/sign-in/social",
                json={"provider": "github", "callbackURL": target},
            ) as resp:
                assert resp.status == 403, target
                assert (await resp.json())["error"] == "invalid_callback_url"
        _token, resp = await sign_in(http, env, callback_url=TRUSTED + "/done?x=1")
        assert resp.headers["Location"] == TRUSTED + "/done?x=1"


async def test_second_sign_in_links_the_same_user_with_a_new_token(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        first, _ = await sign_in(http, env)
        second, _ = await sign_in(http, env)
        assert first != second
        ids = []
        for token in (first, second):
            async with http.get(env.live.url + "/api/user/whoami", headers=bearer(token)) as r:
                ids.append((await r.json())["user"]["id"])
    assert ids[0] == ids[1]
    accounts = await Account.select().where(
        (Account.provider == "github") & (Account.provider_account_id == "1001")
    )
    assert len(accounts) == 1


async def test_only_a_primary_verified_email_is_taken(env: Env) -> None:
    env.gh.users.append(
        FakeUser(
            id=2002,
            login="nomail",
            name=None,
            emails=[("primary@example.com", True, False), ("other@example.com", False, True)],
            public_email="public@example.com",
        )
    )
    env.gh.login_as = "nomail"
    try:
        async with aiohttp.ClientSession() as http:
            started = await start(
                http,
                env,
                {"callbackURL": "/after", "newUserCallbackURL": "/welcome"},
                path="github",
            )
            resp = await callback(
                http, env, await at_github(http, started.url), started.state_cookie
            )
            assert resp.headers["Location"] == "/welcome"  # a new user
            token = resp.headers["set-auth-token"]
            async with http.get(env.live.url + "/api/auth/get-session", headers=bearer(token)) as r:
                user = (await r.json())["user"]
    finally:
        env.gh.login_as = None
    assert user["name"] == "nomail"
    assert user["email"] is None and user["emailVerified"] is False


async def test_github_refusal_and_failed_exchange(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        env.gh.deny = True
        try:
            started = await start(
                http,
                env,
                {"provider": "github", "callbackURL": "/after", "errorCallbackURL": "/oops"},
            )
            resp = await callback(
                http, env, await at_github(http, started.url), started.state_cookie
            )
        finally:
            env.gh.deny = False
        assert resp.status == 302
        assert resp.headers["Location"] == "/oops?error=access_denied"
        # A code GitHub does not know: the exchange fails, no session.
        started = await start(http, env, {"provider": "github", "callbackURL": "/after"})
        bogus = f"/api/auth/callback/github?code=0000&state={started.query['state']}"
        resp = await callback(http, env, bogus, started.state_cookie)
        assert resp.status == 302 and "error=" in resp.headers["Location"]
        assert "set-auth-token" not in resp.headers


async def test_sign_in_bad_input(env: Env) -> None:
    url = env.live.url + "/api/auth/sign-in/social"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"provider": "google"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "provider_not_found"
        for body in ({}, {"provider": 1}, {"provider": "github", "callbackURL": ["/"]}):
            async with http.post(url, json=body) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"] in ("invalid_request",)
        async with http.post(url, data=b"{oops", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert "error_description" in await r.json()
        async with http.post(url, json={"provider": "github"}) as resp:
            assert resp.status == 200  # callbackURL is optional
        async with http.get(env.live.url + "/api/auth/callback/github?code=x&state=y") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "state_not_found"
        # Local sign-in is off when GitHub is configured.
        async with http.get(env.live.url + "/auth/local?token=x") as resp:
            assert resp.status == 403


async def test_sign_in_link_for_pages(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            env.live.url + "/auth/github",
            params={"next": "/device?user_code=BCDF-GHJK"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 302
            assert resp.headers["Location"].startswith(env.gh.web_url)
            state_cookie = {k: m.value for k, m in set_cookies(resp).items()}
        location = await at_github(http, resp.headers["Location"])
        done = await callback(http, env, location, state_cookie)
        assert done.headers["Location"] == "/device?user_code=BCDF-GHJK"
        async with http.get(
            env.live.url + "/auth/github",
            params={"next": "https://evil.example/"},
            allow_redirects=False,
        ) as resp:
            state_cookie = {k: m.value for k, m in set_cookies(resp).items()}
            location = await at_github(http, resp.headers["Location"])
        done = await callback(http, env, location, state_cookie)
        assert done.headers["Location"] == "/device"
