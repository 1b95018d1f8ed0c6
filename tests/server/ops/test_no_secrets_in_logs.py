"""No secret reaches the logs: a full flow against ``cero-api serve`` at debug level.

The server runs as production does (a child process, ``CERO_LOG_LEVEL=debug``, JSON logs)
against the GitHub and Gemini stand-ins. The flow: GitHub sign-in (authorize, callback with
code, state and PKCE verifier), the device flow (code, claim, approve, token), a chat
answered by the Gemini stand-in with an API key, cookie requests, list and revoke a
session, sign out. Every secret seen on the wire is then looked for in every log line:
session tokens, device and user codes, cookie values, the OAuth code, state and verifier,
GitHub's access token, the client secret, the auth secret and the Gemini API key.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson

from server.auth.device_flow import normalize
from standins.gemini import FakeGemini
from standins.github import FakeGitHub
from tests.auth_helpers import bearer, cookie_header, set_cookies
from tests.live_clients import post_chat
from tests.server_process import serve

GRANT = "urn:ietf:params:oauth:grant-type:device_code"


async def test_a_full_flow_logs_no_secret(database_url: str, tmp_path: Path) -> None:
    client_secret = "gh-secret-" + secrets.token_hex(12)
    auth_secret = "auth-secret-" + secrets.token_hex(16)
    api_key = "AIza-" + secrets.token_hex(16)
    gh = FakeGitHub("Iv1.cero-logs", client_secret)
    await gh.start()
    gemini = FakeGemini()
    await gemini.start()
    env = {
        "CERO_LOG_LEVEL": "debug",
        "CERO_LOG_FORMAT": "json",
        "BETTER_AUTH_SECRET": auth_secret,
        "BETTER_AUTH_GITHUB_CLIENT_ID": "Iv1.cero-logs",
        "BETTER_AUTH_GITHUB_CLIENT_SECRET": client_secret,
        "CERO_GITHUB_URL": gh.web_url,
        "CERO_GITHUB_API_URL": gh.api_url,
        "GOOGLE_GENERATIVE_AI_API_KEY": api_key,
        "CERO_GEMINI_BASE_URL": gemini.base_url,
    }
    seen: dict[str, str] = {
        "client secret": client_secret,
        "auth secret": auth_secret,
        "api key": api_key,
    }
    try:
        async with (
            serve(database_url, cwd=tmp_path, env=env) as server,
            aiohttp.ClientSession() as http,
        ):
            gh.registered_redirect_uri = f"{server.url}/api/auth/callback/github"
            own = {"Origin": server.url}
            # -- GitHub sign-in --------------------------------------------------------------
            async with http.post(
                server.url + "/api/auth/sign-in/social",
                json={"provider": "github", "callbackURL": "/app"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                authorize = (await resp.json())["url"]
                state_cookies = {k: m.value for k, m in set_cookies(resp).items()}
            seen.update({f"cookie {k}": v for k, v in state_cookies.items()})
            seen["state"] = parse_qs(urlsplit(authorize).query)["state"][0]
            async with http.get(authorize, allow_redirects=False) as resp:
                location = resp.headers["Location"]
            seen["oauth code"] = parse_qs(urlsplit(location).query)["code"][0]
            back = urlsplit(location)
            async with http.get(
                f"{server.url}{back.path}?{back.query}",
                headers=cookie_header(state_cookies),
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302, await resp.text()
                token = resp.headers["set-auth-token"]
                cookies = {k: m.value for k, m in set_cookies(resp).items() if m.value}
            seen["session token"] = token
            seen.update({f"cookie {k}": v for k, v in cookies.items()})
            exchange = gh.requests_to("/login/oauth/access_token")[-1]
            seen["verifier"] = parse_qs(exchange.body)["code_verifier"][0]
            seen.update({f"github token {i}": t for i, t in enumerate(gh.tokens)})
            # -- the device flow, approved by cookie from the page's origin --------------------
            async with http.post(
                server.url + "/api/auth/device/code", data={"client_id": "cero-cli"}
            ) as resp:
                issued = await resp.json()
            seen["device code"] = issued["device_code"]
            seen["user code"] = issued["user_code"]
            seen["user code (bare)"] = normalize(issued["user_code"]) or "?"
            async with http.get(
                server.url + "/device",
                params={"user_code": issued["user_code"]},
                headers=cookie_header(cookies),
            ) as resp:
                assert resp.status == 200
            async with http.post(
                server.url + "/device",
                data={"user_code": issued["user_code"], "action": "approve"},
                headers={**cookie_header(cookies), **own},
            ) as resp:
                assert "Device approved" in await resp.text()
            async with http.post(
                server.url + "/api/auth/device/token",
                json={
                    "grant_type": GRANT,
                    "device_code": issued["device_code"],
                    "client_id": "cero-cli",
                },
            ) as resp:
                assert resp.status == 200, await resp.text()
                device_token = (await resp.json())["access_token"]
            seen["device session token"] = device_token
            # -- chat against the Gemini stand-in, by bearer and over the WebSocket ------------
            async with post_chat(http, server.url, device_token, message="hello") as resp:
                lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
            assert lines[-1]["topic"] == "done", lines[-1]
            async with http.ws_connect(
                server.url + "/api/ws", params={"token": device_token}
            ) as ws:
                await ws.send_json({"type": "ping"})
                assert (await ws.receive_json(timeout=10))["type"] != "fault"
            async with http.get(
                server.url + "/api/user/whoami", headers=cookie_header(cookies)
            ) as resp:
                assert resp.status == 200
            # -- list, revoke, sign out -----------------------------------------------------
            async with http.get(
                server.url + "/api/auth/list-sessions", headers=bearer(token)
            ) as resp:
                others = [s["id"] for s in await resp.json() if not s["current"]]
            assert len(others) == 1
            async with http.post(
                server.url + "/api/auth/revoke-session",
                json={"id": others[0]},
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200
            async with http.get(server.url + "/api/user/whoami", headers=bearer(device_token)) as r:
                assert r.status == 401
            async with http.post(
                server.url + "/api/auth/sign-out", headers={**cookie_header(cookies), **own}
            ) as resp:
                assert resp.status == 200
            # -- refusals, where a secret is most tempting to log -----------------------------
            wrong = {name: secrets.token_urlsafe(24) for name in ("bearer", "device", "local")}
            wrong["user code"] = "ZZZZ-XXXX"
            seen.update({f"wrong {name}": value for name, value in wrong.items()})
            refusals: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", "/api/user/whoami", {"headers": bearer(wrong["bearer"])}),
                ("GET", "/api/auth/get-session", {"headers": bearer(wrong["bearer"])}),
                ("GET", "/api/ws", {"params": {"token": wrong["bearer"]}}),
                ("GET", "/auth/local", {"params": {"token": wrong["local"]}}),
                ("GET", "/api/auth/device", {"params": {"user_code": wrong["user code"]}}),
                (
                    "POST",
                    "/api/auth/device/token",
                    {
                        "json": {
                            "grant_type": GRANT,
                            "device_code": wrong["device"],
                            "client_id": "cero-cli",
                        }
                    },
                ),
                (
                    "POST",
                    "/api/auth/device/token",
                    {
                        "json": {
                            "grant_type": GRANT,
                            "device_code": issued["device_code"],
                            "client_id": "cero-cli",
                        }
                    },
                ),
                (
                    "GET",
                    "/api/auth/callback/github",
                    {
                        "params": {"code": seen["oauth code"], "state": seen["state"]},
                        "headers": cookie_header(state_cookies),
                    },
                ),
                ("GET", "/api/user/whoami", {"headers": cookie_header(cookies)}),
                (
                    "POST",
                    "/api/conversations/x/cancel",
                    {"headers": {**cookie_header(cookies), "Origin": "http://evil.test"}},
                ),
            ]
            for method, path, kwargs in refusals:
                async with http.request(
                    method, server.url + path, allow_redirects=False, **kwargs
                ) as resp:
                    assert resp.status < 500, (path, resp.status)
            await server.stop()
            log = server.log()
    finally:
        await gemini.stop()
        await gh.stop()
    lines = log.splitlines()
    assert len(lines) > 10 and any('"debug"' in line for line in lines), log[-2000:]
    assert all(len(value) >= 8 for value in seen.values()), seen
    leaks = [(name, line[:300]) for line in lines for name, value in seen.items() if value in line]
    assert leaks == [], leaks
