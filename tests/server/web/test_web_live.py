"""The page's conversation list, live from the account channel (docs/api.md, "Account
channel"; issue 24 item 1) in a real browser.

Two browser contexts signed in as the same local user are two devices: a chat started on
one (or over the HTTP API, as the CLI does) appears in the other's list, a rename reaches
it, an answer streaming anywhere marks its conversation, and deleting the conversation open
on the other closes it there with a notice. No test focuses or reloads the watching page:
the list's refetch on focus is only the fallback. Set up as in ``test_web_app.py``, whose
helpers this module uses.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from server.auth.local import issue_link
from server.auth.sessions import SESSIONS
from standins.gemini import Script
from tests.conftest import IN_CI
from tests.live_clients import post_chat, read_ndjson
from tests.server.web.test_web_app import (
    Devices,
    Env,
    browser_env,
    conversation_of,
    last_answer,
    new_context,
    rest,
    send,
    shot,
    signed_in_context,
    watched,
)

try:
    from playwright.async_api import Locator, Page, WebSocketRoute, expect
except ImportError:  # pragma: no cover - the dev dependencies include playwright
    if IN_CI:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with browser_env(tmp_path_factory, "live") as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def devices(env: Env) -> AsyncIterator[Devices]:
    """Device A signed in with the local sign-in link; device B a second session."""
    a_ctx = await new_context(env)
    a, a_errors = await watched(a_ctx)
    await a.goto(f"/auth/local?token={await issue_link(60)}")
    await expect(a.locator("#who")).to_have_text("Local user")
    session = await a.evaluate("fetch('/api/auth/get-session').then((r) => r.json())")
    env.user_id = session["user"]["id"]
    env.token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="tests")
    b_ctx = await signed_in_context(env)
    b, b_errors = await watched(b_ctx)
    await b.goto("/app")
    for page in (a, b):
        await expect(page.locator("#conn")).to_have_text("live")
    yield Devices(a=a, b=b, a_ctx=a_ctx, b_ctx=b_ctx, errors=a_errors)
    assert not a_errors, a_errors
    assert not b_errors, b_errors
    await a_ctx.close()
    await b_ctx.close()


def item(page: Page, conv: str) -> Locator:
    return page.locator(f'#conversations li[data-conv="{conv}"]')


async def count_visibility_refetches(page: Page) -> None:
    """Make sure nothing here leans on the focus fallback: a visibility change would show."""
    await page.evaluate(
        "window.__visibility = 0;"
        "document.addEventListener('visibilitychange', () => { window.__visibility += 1; })"
    )


async def test_a_chat_started_elsewhere_appears_in_the_list_live(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    await count_visibility_refetches(b)
    # From device A's page.
    await send(a, "planning a trip to Lisbon")
    await expect(last_answer(a)).to_have_attribute("data-status", "complete")
    conv = conversation_of(a)
    await expect(item(b, conv)).to_have_text("planning a trip to Lisbon")
    await expect(b.locator("#conversations li[data-conv]").first).to_have_attribute(
        "data-conv", conv
    )
    await expect(b.locator("#conversations li.conv-group").first).to_have_text("Today")

    # From the HTTP API, as the CLI does, with its answer held mid-way: the conversation
    # comes on top, marked as answering on both devices until the answer ends.
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=["Sure", " thing."], release_after=1, release=release))
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="from the terminal") as r:
            assert r.status == 200
            cli_conv = r.headers["X-Conversation-Id"]
            for page in (a, b):
                top = page.locator("#conversations li[data-conv]").first
                await expect(top).to_have_attribute("data-conv", cli_conv)
                await expect(top).to_have_text("from the terminal")
                await expect(top).to_have_attribute("data-answering", "true")
            await shot(b, "list-live-answering")
            release.set()
            await read_ndjson(r)
    for page in (a, b):
        await expect(item(page, cli_conv)).not_to_have_attribute("data-answering", "true")
    # A new turn in the older conversation moves it back on top, on the other device too.
    await send(a, "and the hotels?")
    await expect(last_answer(a)).to_have_attribute("data-text", "You said: and the hotels?")
    await expect(b.locator("#conversations li[data-conv]").first).to_have_attribute(
        "data-conv", conv
    )
    assert await b.evaluate("window.__visibility") == 0


async def test_a_rename_on_one_device_reaches_the_other(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="untitled thoughts") as r:
            assert r.status == 200
            conv = r.headers["X-Conversation-Id"]
            await r.read()
    await expect(item(a, conv)).to_be_visible()
    await a.locator(f'#conversations li[data-conv="{conv}"] a').click()
    await b.goto(f"/app#c={conv}")  # B has it open: its header follows too
    await expect(b.locator("#title")).to_have_text("untitled thoughts")
    await a.locator("#rename").click()
    await a.locator("#rename-input").fill("Thoughts, titled")
    await a.locator("#rename-input").press("Enter")
    await expect(a.locator("#title")).to_have_text("Thoughts, titled")
    await expect(b.locator("#title")).to_have_text("Thoughts, titled")
    await expect(item(b, conv)).to_have_text("Thoughts, titled")
    # Renamed over the API while B shows another conversation: B's list follows.
    await b.locator("#new-chat").click()
    await rest(env, "PATCH", f"/api/conversations/{conv}", json={"shortTitle": "From the CLI"})
    for page in (a, b):
        await expect(item(page, conv)).to_have_text("From the CLI")
    await expect(a.locator("#title")).to_have_text("From the CLI")
    await expect(b.locator("#title")).to_have_text("New chat")


async def test_deleting_the_conversation_open_elsewhere_closes_it_there(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    await a.locator("#new-chat").click()
    await send(a, "soon to be deleted")
    await expect(last_answer(a)).to_have_attribute("data-status", "complete")
    conv = conversation_of(a)
    await b.goto(f"/app#c={conv}")
    await expect(last_answer(b)).to_have_attribute("data-status", "complete")
    for page in (a, b):
        await expect(page.locator("#presence")).to_have_text("2 devices watching")
    await b.locator("#input").fill("a draft typed on B")
    a.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await a.locator("#delete").click()
    await expect(a.locator("#title")).to_have_text("New chat")
    await expect(item(a, conv)).to_have_count(0)
    # B: closed, with the notice; nothing of it left behind.
    await expect(b.locator("#notice")).to_have_text(
        "This conversation was deleted on another device."
    )
    await expect(b.locator("#title")).to_have_text("New chat")
    await expect(b.locator("#messages article")).to_have_count(0)
    await expect(b.locator("#presence")).to_be_hidden()
    await expect(b.locator("#rename")).to_be_hidden()
    await expect(b.locator("#delete")).to_be_hidden()
    await expect(b.locator("#stop")).to_be_hidden()
    await expect(item(b, conv)).to_have_count(0)
    assert "#c=" not in b.url
    await shot(b, "deleted-elsewhere")
    # The one who deleted it is not told it was deleted elsewhere.
    await expect(a.locator("#notice")).to_be_hidden()
    # B's composer works: the draft is kept, and sending it starts a new chat.
    await expect(b.locator("#input")).to_have_value("a draft typed on B")
    await expect(b.locator("#send")).to_be_enabled()
    await b.locator("#input").press("Enter")
    await expect(last_answer(b)).to_have_attribute("data-text", "You said: a draft typed on B")
    assert conversation_of(b) != conv
    await expect(b.locator("#notice")).to_be_hidden()


async def test_a_device_that_was_offline_catches_up_from_its_cursor(
    env: Env, devices: Devices
) -> None:
    """B misses events while offline: it resumes the account channel after its last cursor
    (`subscribe` with `after`), and the list shows what happened meanwhile."""
    a, b = devices.a, devices.b
    sent: list[dict[str, object]] = []
    b.on(
        "websocket",
        lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))),
    )
    await devices.b_ctx.set_offline(True)
    await expect(b.locator("#conn")).to_contain_text("offline")
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="while B was away") as r:
            assert r.status == 200
            conv = r.headers["X-Conversation-Id"]
            await r.read()
    await expect(item(a, conv)).to_have_text("while B was away")
    await devices.b_ctx.set_offline(False)
    await expect(b.locator("#conn")).to_have_text("live")
    await expect(item(b, conv)).to_have_text("while B was away")
    resumed = [f for f in sent if f.get("type") == "subscribe" and f.get("channel") == "account"]
    assert resumed and ":" in str(resumed[0].get("after")), resumed


async def test_a_cursor_that_cannot_be_replayed_refetches_the_list(
    env: Env, devices: Devices
) -> None:
    """A resume the server cannot replay (here a proxy rewrites the page's cursor to another
    epoch, as after the log was lost) gets `reset`: the page refetches the list."""
    context = await signed_in_context(env)
    page, errors = await watched(context)
    rewritten: list[str] = []

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("channel") == "account" and frame.get("after"):
                rewritten.append(frame["after"])
                frame["after"] = "lostepoch:7"
                message = json.dumps(frame)
            server.send(message)

        ws.on_message(to_server)
        server.on_message(ws.send)

    await page.route_web_socket(re.compile(r"/api/ws$"), proxy)
    await page.goto("/app")
    await expect(page.locator("#conn")).to_have_text("live")
    # "live" is the socket open; the account channel's `subscribed` (which gives the page
    # its cursor, and refetches the list: its second fetch of it) comes after.
    await page.wait_for_function(
        """() => performance.getEntriesByType('resource')
            .filter((e) => new URL(e.name).pathname === '/api/conversations').length >= 2"""
    )
    await context.set_offline(True)
    await expect(page.locator("#conn")).to_contain_text("offline")
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="during the reset") as r:
            assert r.status == 200
            conv = r.headers["X-Conversation-Id"]
            await r.read()
    await context.set_offline(False)
    await expect(page.locator("#conn")).to_have_text("live")
    await expect(item(page, conv)).to_have_text("during the reset")
    assert rewritten, "the page did not resume the account channel with its cursor"
    # Live again after the reset.
    await rest(env, "PATCH", f"/api/conversations/{conv}", json={"shortTitle": "After reset"})
    await expect(item(page, conv)).to_have_text("After reset")
    assert not errors, errors
    await context.close()


async def test_sign_out_everywhere_else_ends_the_other_devices(env: Env, devices: Devices) -> None:
    """The Sessions panel's "Sign out everywhere else" (POST
    /api/auth/revoke-other-sessions): B's page goes to the sign-in view, A's panel keeps
    only this device; a third device's row disappears from an open panel as it is revoked."""
    a, b = devices.a, devices.b
    c_ctx = await signed_in_context(env)
    c, c_errors = await watched(c_ctx)
    await c.goto("/app")
    await expect(c.locator("#conn")).to_have_text("live")
    await a.locator("#open-sessions").click()
    rows = a.locator("#session-list li[data-session]")
    await expect(rows.filter(has_text="this device")).to_have_count(1)
    await expect(a.locator("#revoke-others")).to_be_visible()
    # B revokes C from its own panel: A's open panel drops C's row (session.revoked).
    c_session = await c.evaluate("fetch('/api/auth/get-session').then((r) => r.json())")
    c_id = c_session["session"]["id"]
    await expect(a.locator(f'#session-list li[data-session="{c_id}"]')).to_have_count(1)
    await b.locator("#open-sessions").click()
    await b.locator(f'#session-list li[data-session="{c_id}"] button').click()
    await expect(c.locator("#signin")).to_be_visible()
    await expect(a.locator(f'#session-list li[data-session="{c_id}"]')).to_have_count(0)
    await a.locator("#revoke-others").click()
    await expect(a.locator("#sessions-status")).to_have_text("Signed out everywhere else.")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("this device")
    await expect(a.locator("#revoke-others")).to_be_hidden()
    await expect(b.locator("#signin")).to_be_visible()
    sessions = await a.evaluate("fetch('/api/auth/list-sessions').then((r) => r.json())")
    assert [s["current"] for s in sessions] == [True]
    await a.keyboard.press("Escape")
    await expect(a.locator("#sessions")).to_be_hidden()
    assert not c_errors, c_errors
    await c_ctx.close()
