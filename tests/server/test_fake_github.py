"""Self-test of the GitHub stand-in (standins/github.py) over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from standins.github import FakeGitHub, FakeUser

CLIENT_ID = "Iv1.testclient"
CLIENT_SECRET = "s3cr3t"
REDIRECT = "http://127.0.0.1:9/api/auth/callback/github"
JSON = {"Accept": "application/json"}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    return verifier, challenge


@pytest_asyncio.fixture
async def gh() -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub(CLIENT_ID, CLIENT_SECRET)
    fake.users = [
        FakeUser(
            id=42,
            login="ada",
            name="Ada Lovelace",
            avatar_url="https://avatars.example/42",
            emails=[("old@example.com", False, True), ("ada@example.com", True, True)],
        ),
        FakeUser(id=43, login="bob", name=None, emails=[("bob@example.com", True, False)]),
    ]
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def _authorize(
    http: aiohttp.ClientSession, gh: FakeGitHub, challenge: str | None, state: str = "st4te"
) -> dict[str, list[str]]:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "state": state,
        "scope": "read:user user:email",
        "redirect_uri": REDIRECT,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    async with http.get(
        f"{gh.web_url}/login/oauth/authorize", params=params, allow_redirects=False
    ) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def _exchange(
    http: aiohttp.ClientSession, gh: FakeGitHub, code: str, verifier: str | None
) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    async with http.post(f"{gh.web_url}/login/oauth/access_token", data=form, headers=JSON) as r:
        assert r.status == 200
        body: dict[str, str] = await r.json()
        return body


@pytest.mark.asyncio
async def test_full_flow_with_pkce(gh: FakeGitHub) -> None:
    verifier, challenge = _pkce()
    async with aiohttp.ClientSession() as http:
        q = await _authorize(http, gh, challenge)
        assert q["state"] == ["st4te"]
        token = await _exchange(http, gh, q["code"][0], verifier)
        assert token["token_type"] == "bearer"
        assert token["scope"] == "read:user,user:email"
        access = token["access_token"]
        auth = {"Authorization": f"Bearer {access}"}
        async with http.get(f"{gh.api_url}/user", headers=auth) as r:
            assert r.status == 200
            user = await r.json()
        assert (user["id"], user["login"], user["name"], user["email"]) == (
            42,
            "ada",
            "Ada Lovelace",
            None,
        )
        assert user["avatar_url"] == "https://avatars.example/42"
        async with http.get(
            f"{gh.api_url}/user/emails", headers={"Authorization": f"token {access}"}
        ) as r:
            assert r.status == 200
            emails = await r.json()
        primary = [e for e in emails if e["primary"]]
        assert primary == [
            {"email": "ada@example.com", "primary": True, "verified": True, "visibility": "private"}
        ]
    assert [r.path for r in gh.requests] == [
        "/login/oauth/authorize",
        "/login/oauth/access_token",
        "/user",
        "/user/emails",
    ]
    assert "code_verifier" in gh.requests_to("/login/oauth/access_token")[0].body


@pytest.mark.asyncio
async def test_wrong_verifier_is_rejected_and_spends_the_code(gh: FakeGitHub) -> None:
    verifier, challenge = _pkce()
    other, _ = _pkce()
    async with aiohttp.ClientSession() as http:
        q = await _authorize(http, gh, challenge)
        bad = await _exchange(http, gh, q["code"][0], other)
        assert bad["error"] == "bad_verification_code"
        assert "access_token" not in bad
        again = await _exchange(http, gh, q["code"][0], verifier)
        assert again["error"] == "bad_verification_code"
        q2 = await _authorize(http, gh, challenge)
        missing = await _exchange(http, gh, q2["code"][0], None)
        assert missing["error"] == "bad_verification_code"


@pytest.mark.asyncio
async def test_code_reuse_is_rejected(gh: FakeGitHub) -> None:
    verifier, challenge = _pkce()
    async with aiohttp.ClientSession() as http:
        q = await _authorize(http, gh, challenge)
        first = await _exchange(http, gh, q["code"][0], verifier)
        assert "access_token" in first
        second = await _exchange(http, gh, q["code"][0], verifier)
        assert second["error"] == "bad_verification_code"
        assert second["error_description"] == "The code passed is incorrect or expired."


@pytest.mark.asyncio
async def test_form_encoded_reply_and_client_errors(gh: FakeGitHub) -> None:
    async with aiohttp.ClientSession() as http:
        q = await _authorize(http, gh, None)
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        async with http.post(
            f"{gh.web_url}/login/oauth/access_token",
            data={"code": q["code"][0]},
            headers={"Authorization": f"Basic {basic}"},
        ) as r:
            assert r.status == 200
            assert r.content_type == "application/x-www-form-urlencoded"
            reply = parse_qs(await r.text())
        assert reply["token_type"] == ["bearer"]
        assert reply["access_token"][0].startswith("gho_")

        q = await _authorize(http, gh, None)
        async with http.post(
            f"{gh.web_url}/login/oauth/access_token",
            json={"code": q["code"][0], "client_id": CLIENT_ID, "client_secret": "nope"},
            headers=JSON,
        ) as r:
            assert (await r.json())["error"] == "incorrect_client_credentials"

        async with http.post(
            f"{gh.web_url}/login/oauth/access_token",
            json={
                "code": q["code"][0],
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": "http://127.0.0.1:9/elsewhere",
            },
            headers=JSON,
        ) as r:
            assert (await r.json())["error"] == "redirect_uri_mismatch"

        async with http.get(
            f"{gh.api_url}/user", headers={"Authorization": "Bearer gho_wrong"}
        ) as r:
            assert r.status == 401
            assert (await r.json())["message"] == "Bad credentials"
        async with http.get(f"{gh.api_url}/user") as r:
            assert r.status == 401


@pytest.mark.asyncio
async def test_deny_other_user_and_scope(gh: FakeGitHub) -> None:
    async with aiohttp.ClientSession() as http:
        gh.deny = True
        q = await _authorize(http, gh, None, state="s1")
        assert q["error"] == ["access_denied"]
        assert q["state"] == ["s1"]
        assert "code" not in q

        gh.deny = False
        gh.login_as = "bob"
        q = await _authorize(http, gh, None)
        token = await _exchange(http, gh, q["code"][0], None)
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        async with http.get(f"{gh.api_url}/user", headers=auth) as r:
            assert (await r.json())["login"] == "bob"
        async with http.get(f"{gh.api_url}/user/emails", headers=auth) as r:
            assert await r.json() == [
                {
                    "email": "bob@example.com",
                    "primary": True,
                    "verified": False,
                    "visibility": "private",
                }
            ]

        no_email_scope = gh.issue_token("ada", scope="read:user")
        async with http.get(
            f"{gh.api_url}/user/emails", headers={"Authorization": f"Bearer {no_email_scope}"}
        ) as r:
            assert r.status == 404
