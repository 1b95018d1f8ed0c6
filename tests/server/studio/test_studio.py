"""``cero-api studio`` (server/studio/): operators made on the command line, the studio in a
child process on its own loopback port against the server's database (both engines), its
sign-in, the tables it shows and hides, read-only unless ``--write``, and Chromium signing
in through its page to find a user and a conversation made through our API."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import unused_port
from piccolo.apps.user.tables import BaseUser
from piccolo_api.session_auth.tables import SessionsBase
from yarl import URL

from server.core.ids import token_hash
from server.storage.db import ENGINE
from server.studio.operators import bind_studio_tables
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import post_chat, read_ndjson
from tests.server.web.test_web_app import CHROMIUM, _require_browser, shot
from tests.server_process import ROOT, ServerProcess, run_server, server_env

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

OPERATOR = "ops"
PASSWORD = "correct horse battery staple"
CERO_API = (sys.executable, "-m", "server.cli")
#: The tables the studio shows; the studio's own, and the sign-in secrets', are not.
SHOWN = ["account", "attachment", "cero_user", "conversation", "message", "session"]


async def cero_api(
    database_url: str, *args: str, stdin: str | None = None, cwd: Path = ROOT
) -> tuple[int, str, str]:
    """``cero-api ARGS`` in a child process on ``database_url``: its exit code, stdout and
    stderr (the logs, and a refusal's one line)."""
    proc = await asyncio.create_subprocess_exec(
        *CERO_API,
        *args,
        cwd=cwd,
        env=server_env(unused_port(), database_url, {"CERO_LOG_FORMAT": "json"}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else b""), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def studio(database_url: str, *flags: str) -> AsyncIterator[ServerProcess]:
    """``cero-api studio --port P FLAGS`` until the block ends; ready when its page's
    public metadata answers."""
    port = unused_port()
    async with run_server(
        (*CERO_API, "studio", "--port", str(port), *flags),
        port=port,
        env=server_env(port, database_url),
        ready_path="/public/meta/",
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def client(server: ServerProcess) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that keeps the studio's cookies (``unsafe``: cookies of an IP address)
    and sends its CSRF token, as the studio's page does."""
    async with aiohttp.ClientSession(
        base_url=server.url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        async with http.get("/") as resp:
            assert resp.status == 200
        csrf = http.cookie_jar.filter_cookies(URL(server.url))["csrftoken"].value
        http.headers["X-CSRFToken"] = csrf
        yield http


async def sign_in(http: aiohttp.ClientSession, name: str, password: str) -> int:
    async with http.post("/public/login/", json={"username": name, "password": password}) as r:
        return r.status


@dataclass
class Data:
    """A user and a conversation made through our API, and the operator's studio."""

    live: Live
    token: str
    user_id: str
    user_name: str
    conversation_id: str
    title: str
    studio: ServerProcess


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def data(live: Live, database_url: str) -> AsyncIterator[Data]:
    name = f"Studio user {secrets.token_hex(3)}"
    token, user_id = await make_user_session(name=name)
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, live.url, token, message="hello studio", aiModel="demo") as r:
            assert r.status == 200, await r.text()
            lines = await read_ndjson(r)
        conversation_id = str(lines[0]["data"]["conversationId"])
        title = f"Studio conversation {secrets.token_hex(3)}"
        async with http.patch(
            f"{live.url}/api/conversations/{conversation_id}",
            json={"shortTitle": title},
            headers=bearer(token),
        ) as r:
            assert r.status == 200, await r.text()
    # `serve` (here the in-process app) migrated the server's tables only.
    bind_studio_tables(live.app[ENGINE])
    assert not await BaseUser.table_exists().run()
    assert not await SessionsBase.table_exists().run()
    code, out, err = await cero_api(
        database_url, "studio", "add-operator", OPERATOR, "--password-stdin", stdin=PASSWORD
    )
    assert await BaseUser.table_exists().run()
    assert await SessionsBase.table_exists().run()
    assert (code, out) == (0, f"operator {OPERATOR} added\n"), err
    async with studio(database_url) as server:
        yield Data(live, token, user_id, name, conversation_id, title, server)


async def test_add_operator_checks_its_input_and_resets_a_password(
    data: Data, database_url: str
) -> None:
    async def add(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        return await cero_api(database_url, "studio", "add-operator", *args, stdin=stdin)

    code, _, err = await add("second", "--password-stdin", stdin="short\n")
    assert code == 2 and "the password is too short (at least 12)" in err, err
    code, _, err = await add("two words", "--password-stdin", stdin=PASSWORD)
    assert code == 2 and "without spaces" in err, err
    code, _, err = await add("second")  # stdin is a pipe, not a terminal
    assert code == 2 and "pass --password-stdin" in err, err
    code, out, err = await add("second", "--password-stdin", stdin="first password 1\n")
    assert (code, out) == (0, "operator second added\n"), err
    code, out, err = await add("second", "--password-stdin", stdin="second password 2\n")
    assert (code, out) == (0, "operator second has a new password (its studio sign-ins ended)\n"), (
        err
    )
    async with client(data.studio) as http:
        assert await sign_in(http, "second", "first password 1") == 401
        assert await sign_in(http, "second", "second password 2") == 200


async def test_studio_needs_the_servers_tables(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = await cero_api(f"sqlite:///{missing}", "studio", cwd=tmp_path)
    assert code == 2 and f"no database at {missing}" in err, err
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = await cero_api(
        f"sqlite:///{empty}", "studio", "add-operator", "x", "--password-stdin", stdin=PASSWORD
    )
    assert code == 2 and "no Cero API tables (run `cero-api migrate`" in err, err
    code, _, err = await cero_api(f"sqlite:///{empty}", "studio", "--port", str(unused_port()))
    assert code == 2 and "no Cero API tables (run `cero-api migrate`" in err, err


async def test_a_port_in_use_is_one_line(data: Data, database_url: str) -> None:
    code, _, err = await cero_api(database_url, "studio", "--port", str(data.studio.port))
    assert code == 2, err
    assert f"cannot listen on 127.0.0.1:{data.studio.port} (--port)" in err, err


async def test_another_host_name_is_refused(data: Data) -> None:
    """A page that rebinds its own name to 127.0.0.1 reaches the port, never the studio."""
    async with aiohttp.ClientSession() as http:
        async with http.get(data.studio.url + "/", headers={"Host": "evil.example"}) as r:
            assert r.status == 400
        for host in (f"127.0.0.1:{data.studio.port}", f"localhost:{data.studio.port}"):
            async with http.get(data.studio.url + "/", headers={"Host": host}) as r:
                assert r.status == 200, host


async def test_only_operators_sign_in(data: Data) -> None:
    async with client(data.studio) as http:
        async with http.get("/api/tables/") as r:
            assert r.status == 401
        assert await sign_in(http, OPERATOR, PASSWORD + "x") == 401
        # An app user is no operator, whatever they send.
        assert await sign_in(http, data.user_name, PASSWORD) == 401
        assert await sign_in(http, data.user_id, data.token) == 401
        async with http.get("/api/tables/") as r:
            assert r.status == 401
        assert await sign_in(http, OPERATOR, PASSWORD) == 200
        async with http.get("/api/tables/") as r:
            assert r.status == 200
            assert sorted(await r.json()) == SHOWN
        for hidden in ("piccolo_user", "sessions", "device_code", "local_sign_in_link"):
            async with http.get(f"/api/tables/{hidden}/") as r:
                assert r.status == 404, hidden


async def test_sessions_show_token_hashes_only(data: Data) -> None:
    async with client(data.studio) as http:
        assert await sign_in(http, OPERATOR, PASSWORD) == 200
        async with http.get("/api/tables/session/", params={"user_id": data.user_id}) as r:
            assert r.status == 200
            body = await r.text()
            rows = (await r.json())["rows"]
    assert [row["token_hash"] for row in rows] == [token_hash(data.token)]
    assert data.token not in body
    # The studio's own sign-in token is in its cookie only, never in a table shown.
    assert "id" in http.cookie_jar.filter_cookies(URL(data.studio.url))


async def test_read_only_refuses_edits(data: Data) -> None:
    async with client(data.studio) as http:
        assert await sign_in(http, OPERATOR, PASSWORD) == 200
        user = f"/api/tables/cero_user/{data.user_id}/"
        async with http.patch(user, json={"name": "changed"}) as r:
            assert r.status == 405, await r.text()
        async with http.delete(f"/api/tables/conversation/{data.conversation_id}/") as r:
            assert r.status == 405, await r.text()
        async with http.post("/api/tables/cero_user/", json={"name": "new"}) as r:
            assert r.status == 405, await r.text()
        async with http.get(user) as r:
            assert (await r.json())["name"] == data.user_name
    async with aiohttp.ClientSession() as api:
        async with api.get(
            f"{data.live.url}/api/conversations/{data.conversation_id}/messages",
            headers=bearer(data.token),
        ) as r:
            assert r.status == 200


async def test_the_page_signs_in_an_operator_and_shows_our_rows(data: Data) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=15_000)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(base_url=data.studio.url)
            await page.goto("/")
            await expect(page).to_have_url(f"{data.studio.url}/#/login/?nextURL=/")
            await page.fill("input[name=username]", OPERATOR)
            await page.fill("input[name=password]", "not the password")
            await page.locator("[data-uitest=login_button]").click()
            await expect(page.get_by_text("Problem logging in")).to_be_visible()
            await page.fill("input[name=password]", PASSWORD)
            await page.locator("[data-uitest=login_button]").click()
            await expect(page.get_by_text("Welcome to Cero API studio")).to_be_visible()
            await page.get_by_role("link", name="Cero User").click()
            await expect(page.get_by_text(data.user_name)).to_be_visible()
            await page.get_by_role("link", name="Conversation").first.click()
            await expect(page.get_by_text(data.title)).to_be_visible()
            await shot(page, "studio-conversations")
            # The page's own session and CSRF token: an edit is still refused.
            status = await page.evaluate(
                """async (path) => {
                    const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
                    const r = await fetch(path, {
                        method: 'PATCH',
                        headers: {'X-CSRFToken': csrf, 'Content-Type': 'application/json'},
                        body: JSON.stringify({short_title: 'renamed in the studio'}),
                    });
                    return r.status;
                }""",
                f"/api/tables/conversation/{data.conversation_id}/",
            )
            assert status == 405
        finally:
            await browser.close()


async def test_write_mode_edits_and_says_so(data: Data, database_url: str) -> None:
    async with studio(database_url, "--write") as writable, client(writable) as http:
        assert await sign_in(http, OPERATOR, PASSWORD) == 200
        async with http.patch(
            f"/api/tables/cero_user/{data.user_id}/", json={"instructions": "set by an operator"}
        ) as r:
            assert r.status == 200, await r.text()
        async with aiohttp.ClientSession() as api:
            async with api.get(
                f"{data.live.url}/api/user/instructions", headers=bearer(data.token)
            ) as r:
                got: dict[str, Any] = await r.json()
        assert got == {"instructions": "set by an operator"}
        assert '"event":"studio_WRITABLE"' in writable.log()
    assert '"read_only":false' in writable.log()
    assert '"read_only":true' in data.studio.log()
