"""The web page ``/app`` in a real browser: Playwright for Python driving Debian's Chromium.

Two browser contexts signed in as the same (local) user watch one conversation; answers
come from the Gemini stand-in, held mid-answer (``Script.release``) for as long as a test
needs, so nothing here waits on a sleep. Screenshots of every view go to
``test-artifacts/screenshots/`` (a CI artefact; git-ignored).

Without ``/usr/bin/chromium`` these tests skip with the reason, except under ``CI=true``
where they fail (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import pytest_asyncio

from server.auth.local import issue_link
from server.auth.sessions import SESSIONS
from standins.gemini import FakeGemini, Script
from standins.github import FakeGitHub
from tests.auth_helpers import bearer, codec
from tests.conftest import IN_CI, Live, live_app, live_with_gemini
from tests.live_clients import post_chat, read_ndjson

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = os.environ.get("CERO_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Page,
        ViewportSize,
        WebSocketRoute,
        async_playwright,
        expect,
    )

    HAVE_PLAYWRIGHT = True
    PHONE = ViewportSize(width=390, height=844)
    DESKTOP = ViewportSize(width=1200, height=800)
except ImportError:  # pragma: no cover - the dev dependencies include playwright
    HAVE_PLAYWRIGHT = False


def _require_browser() -> None:
    problem = None
    if not HAVE_PLAYWRIGHT:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    elif not Path(CHROMIUM).exists():
        problem = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: browser tests must run, not skip)")
        pytest.skip(problem)


@dataclass
class Env:
    live: Live
    fake: FakeGemini
    browser: Browser
    token: str = ""  # a bearer session of the local user, for checks over REST
    user_id: str = ""


@contextlib.asynccontextmanager
async def browser_env(
    tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: Any
) -> AsyncIterator[Env]:
    """The app on a fresh SQLite file with the Gemini stand-in, and Debian's Chromium;
    ``overrides`` are settings."""
    _require_browser()
    expect.set_options(timeout=15_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    db_path = tmp_path_factory.mktemp(name) / "cero.db"
    async with (
        live_with_gemini(f"sqlite:///{db_path}", **overrides) as (live, fake),
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield Env(live=live, fake=fake, browser=browser)
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with browser_env(tmp_path_factory, "web") as running:
        yield running


async def new_context(env: Env, *, phone: bool = False) -> BrowserContext:
    return await env.browser.new_context(
        viewport=PHONE if phone else DESKTOP, color_scheme="light", base_url=env.live.url
    )


async def watched(context: BrowserContext) -> tuple[Page, list[str]]:
    """A page whose console errors (a CSP violation included) are collected."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def signed_in_context(env: Env, *, phone: bool = False) -> BrowserContext:
    """A context with a new session of the local user (another device of the same user)."""
    context = await new_context(env, phone=phone)
    token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="second device")
    c = codec(env.live.settings)
    await context.add_cookies(
        [{"name": c.session_name, "value": c.session_value(token), "url": env.live.url}]
    )
    return context


@dataclass
class Devices:
    a: Page
    b: Page
    a_ctx: BrowserContext
    b_ctx: BrowserContext
    errors: list[str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def devices(env: Env) -> AsyncIterator[Devices]:
    """Device A signed in with the local sign-in link; device B a second session."""
    a_ctx = await new_context(env)
    a, a_errors = await watched(a_ctx)
    link = f"/auth/local?token={await issue_link(60)}"
    await a.goto(link)
    await expect(a).to_have_url(f"{env.live.url}/app")
    await expect(a.locator("#who")).to_have_text("Local user")
    session = await a.evaluate("fetch('/api/auth/get-session').then((r) => r.json())")
    env.user_id = session["user"]["id"]
    env.token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="tests")
    b_ctx = await signed_in_context(env)
    b, b_errors = await watched(b_ctx)
    await b.goto("/app")
    await expect(b.locator("#who")).to_have_text("Local user")
    await expect(a.locator("#conn")).to_have_text("live")
    await expect(b.locator("#conn")).to_have_text("live")
    errors = a_errors  # both lists are checked at the end
    yield Devices(a=a, b=b, a_ctx=a_ctx, b_ctx=b_ctx, errors=errors)
    assert not a_errors, a_errors
    assert not b_errors, b_errors
    await a_ctx.close()
    await b_ctx.close()


def conversation_of(page: Page) -> str:
    fragment = page.url.partition("#")[2]
    assert fragment.startswith("c="), page.url
    return unquote(fragment[2:])


def last_answer(page: Page) -> Any:
    return page.locator("article.msg.assistant").last


async def send(page: Page, text: str) -> None:
    await page.locator("#input").fill(text)
    await page.locator("#input").press("Enter")  # the keyboard path: Enter sends


async def rest(env: Env, method: str, path: str, **kw: Any) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, env.live.url + path, headers=bearer(env.token), **kw) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def test_sign_in_view_and_page_headers(env: Env) -> None:
    context = await new_context(env)
    page, errors = await watched(context)
    response = await page.goto("/app")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin-local")).to_be_visible()  # local mode: the link hint
    await expect(page.locator("#signin-github")).to_be_hidden()  # GitHub not configured
    await shot(page, "signin")
    await page.set_viewport_size(PHONE)
    await shot(page, "signin-phone")
    assert not errors, errors
    await context.close()


async def test_github_sign_in_lands_on_the_app(
    env: Env, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gh = FakeGitHub("web-client", "web-secret")
    await gh.start()
    db_path = tmp_path_factory.mktemp("gh") / "cero.db"
    try:
        async with live_app(
            f"sqlite:///{db_path}",
            github_client_id="web-client",
            github_client_secret="web-secret",
            github_url=gh.web_url,
            github_api_url=gh.api_url,
        ) as live:
            gh.registered_redirect_uri = f"{live.settings.public_url}/api/auth/callback/github"
            context = await env.browser.new_context(viewport=DESKTOP, color_scheme="light")
            page, errors = await watched(context)
            await page.goto(live.url + "/app")
            button = page.locator("#signin-github a")
            await expect(button).to_be_visible()
            await expect(page.locator("#signin-local")).to_be_hidden()  # not in local mode
            await shot(page, "signin-github")
            await button.click()  # GitHub (the stand-in) approves and sends us back
            await expect(page).to_have_url(live.url + "/app")
            await expect(page.locator("#who")).to_have_text(gh.users[0].name or "")
            await expect(page.locator("#conn")).to_have_text("live")
            assert not errors, errors
            await context.close()
    finally:
        await gh.stop()


# Records every text the page shows for one answer (a MutationObserver; evaluated by the
# browser outside the page's CSP): each must be a prefix of the final text, never shorter
# than the one before (no gap, no duplicate, no flicker back).
WATCH_ANSWER = """(id) => {
  window.__shown = [];
  new MutationObserver(() => {
    const body = document.querySelector(`article[data-id="${id}"] .body`);
    const seen = window.__shown;
    if (body && seen[seen.length - 1] !== body.textContent) seen.push(body.textContent);
  }).observe(document, { subtree: true, childList: true, characterData: true });
}"""


def assert_grew_to(shown: list[str], full: str) -> None:
    assert shown and shown[-1] == full and full.startswith(shown[0]), shown
    for before, after in itertools.pairwise(shown):
        assert full.startswith(after) and after.startswith(before), shown


async def test_two_devices_join_mid_answer_and_end_with_the_same_text(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    release = asyncio.Event()
    full = "Alpha beta gamma delta."
    env.fake.enqueue(
        Script(chunks=["Alpha", " beta", " gamma", " delta."], release_after=2, release=release)
    )
    await send(a, "first question")
    await expect(last_answer(a).locator(".body")).to_have_text("Alpha beta")
    conv = conversation_of(a)
    streaming = (await rest(env, "GET", f"/api/conversations/{conv}/messages"))["messages"][-1]
    assert streaming["status"] == "streaming" and ":" in streaming["resumeCursor"]
    answer_id = streaming["id"]
    # B opens the conversation while the answer is held mid-way: REST, then the log from
    # the answer's resumeCursor (its `init`), replacing the REST text without a flicker.
    await b.evaluate(WATCH_ANSWER, answer_id)
    await b.goto(f"/app#c={conv}")
    await expect(last_answer(b).locator(".body")).to_have_text("Alpha beta")
    await expect(b.locator("#stop")).to_be_visible()
    await expect(a.locator("#presence")).to_have_text("2 devices watching")
    await expect(b.locator("#presence")).to_have_text("2 devices watching")
    # C opens it too, but its subscribe is held on the wire until the answer has finished:
    # every token streams in the gap between its REST read and its subscribe.
    c_ctx = await signed_in_context(env)
    c, c_errors = await watched(c_ctx)
    held: list[str] = []
    gap_over = False

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            subscribing = frame["type"] == "subscribe" and frame.get("conversationId") == conv
            if subscribing and not gap_over:
                held.append(str(message))
                routed.append(server)
                return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(ws.send)

    routed: list[Any] = []
    await c.route_web_socket(re.compile(r"/api/ws$"), proxy)
    await c.add_init_script(f"({WATCH_ANSWER})({json.dumps(answer_id)})")
    await c.goto(f"/app#c={conv}")
    await expect(last_answer(c).locator(".body")).to_have_text("Alpha beta")
    await expect(c.locator("#stop")).to_be_visible()
    release.set()
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "complete")
        await expect(last_answer(page)).to_have_attribute("data-text", full)
        await expect(page.locator("#stop")).to_be_hidden()
    assert held, "C's subscribe was not held"
    gap_over = True
    for message in held:
        routed[0].send(message)
    await expect(last_answer(c)).to_have_attribute("data-status", "complete")
    await expect(last_answer(c)).to_have_attribute("data-text", full)
    await expect(c.locator("#stop")).to_be_hidden()
    for page in (b, c):
        assert_grew_to(await page.evaluate("window.__shown"), full)
    await c_ctx.close()
    assert not c_errors, c_errors

    # A message sent from B appears on A, and its answer streams to both.
    await send(b, "second question from B")
    for page in (a, b):
        await expect(page.locator("article.msg.user")).to_have_count(2)
        await expect(page.locator("article.msg.user .body").last).to_have_text(
            "second question from B"
        )
        await expect(last_answer(page)).to_have_attribute(
            "data-text", "You said: second question from B"
        )
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    assert [m["content"] for m in data["messages"]] == [
        "first question",
        "Alpha beta gamma delta.",
        "second question from B",
        "You said: second question from B",
    ]


async def test_stop_on_one_device_cancels_for_both(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=["One", " two", " three"], release_after=1, release=release))
    await send(a, "count slowly")
    await expect(last_answer(b).locator(".body")).to_have_text("One")
    # A second send waits while the answer runs (Send is disabled; Enter keeps the text).
    await expect(a.locator("#send")).to_be_disabled()
    await send(a, "too soon")
    await expect(a.locator("#notice")).to_contain_text("still answering")
    await expect(a.locator("#input")).to_have_value("too soon")
    await expect(a.locator("article.msg.user", has_text="too soon")).to_have_count(0)
    await b.locator("#stop").click()
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "cancelled")
        await expect(last_answer(page).locator(".body")).to_have_text("One")
        await expect(page.locator("#stop")).to_be_hidden()
        await expect(page.locator("#send")).to_be_enabled()
    await a.locator("#input").fill("")
    release.set()
    data = await rest(env, "GET", f"/api/conversations/{conversation_of(a)}/messages")
    assert "too soon" not in [m["content"] for m in data["messages"]]
    assert data["messages"][-1]["status"] == "cancelled"
    assert data["messages"][-1]["content"] == "One"


async def test_offline_mid_answer_resumes_without_duplicates_and_sends_once(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    release = asyncio.Event()
    chunks = ["Resume", " from", " the", " last", " cursor", " please."]
    env.fake.enqueue(Script(chunks=list(chunks), release_after=2, release=release))
    await send(a, "go offline during this")
    await expect(last_answer(a).locator(".body")).to_have_text("Resume from")
    await devices.a_ctx.set_offline(True)
    await expect(a.locator("#conn")).to_contain_text("offline")
    release.set()
    await expect(last_answer(b)).to_have_attribute("data-text", "".join(chunks))
    # A sends while offline: queued with its clientMessageId, sent once when back.
    await send(a, "sent while offline")
    await expect(a.locator("article.msg.user").last).to_have_attribute("data-status", "streaming")
    await devices.a_ctx.set_offline(False)
    await expect(a.locator("#conn")).to_have_text("live")
    answers = a.locator("article.msg.assistant")
    await expect(answers.nth(-2)).to_have_attribute("data-status", "complete")
    await expect(answers.nth(-2)).to_have_attribute("data-text", "".join(chunks))
    await expect(answers.nth(-2).locator(".body")).to_have_text("".join(chunks))
    await expect(answers.last).to_have_attribute("data-text", "You said: sent while offline")
    await expect(b.locator("article.msg.user .body").last).to_have_text("sent while offline")
    data = await rest(env, "GET", f"/api/conversations/{conversation_of(a)}/messages")
    contents = [m["content"] for m in data["messages"]]
    assert contents.count("sent while offline") == 1
    assert contents.count("".join(chunks)) == 1
    assert await a.locator("article.msg.user", has_text="sent while offline").count() == 1


async def test_markup_in_a_message_or_an_answer_runs_nothing(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    answer = [
        "<script>window.__pwned = 1</script>",
        ' <img src=x onerror="window.__pwned = 2">',
        " [click me](javascript:window.__pwned=3)",
    ]
    env.fake.enqueue(Script(chunks=list(answer)))
    message = '<img src=y onerror="window.__pwned = 4"> <script>window.__pwned = 5</script>'
    await send(a, message)
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "complete")
        body = last_answer(page).locator(".body")
        await expect(body).to_have_text("".join(answer))  # shown as text
        await expect(page.locator("article.msg.user .body").last).to_have_text(message)
        await expect(page.locator("#messages img")).to_have_count(0)
        await expect(page.locator("#messages script")).to_have_count(0)
        await expect(page.locator('#messages a[href^="javascript"]')).to_have_count(0)
        assert await page.evaluate("window.__pwned") is None


async def test_a_failed_answer_says_why(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    env.fake.enqueue(Script(error_before=[503, 503, 503]))  # every attempt fails
    await send(a, "this one fails")
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "error")
        await expect(last_answer(page).locator(".meta")).to_contain_text("failed")
        await expect(last_answer(page).locator(".sources")).not_to_be_empty()
        await expect(page.locator("#stop")).to_be_hidden()
    # The script plays its stream to the request after its errors: none comes, drop it.
    env.fake.scripts.clear()


async def test_tool_steps_and_citations_and_screenshots(env: Env, devices: Devices) -> None:
    a = devices.a
    await a.locator("#new-chat").click()
    await a.locator("#tool-code_execution").check()
    await a.locator("#tool-google_search").check()
    env.fake.enqueue(
        Script(
            chunks=[
                {"executableCode": {"language": "PYTHON", "code": "print(6 * 7)"}},
                {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}},
                "The answer is **42**, computed with `print(6 * 7)`.\n\n",
                "```python\nprint(6 * 7)\n```",
            ],
            grounding={
                "webSearchQueries": ["six times seven"],
                "groundingChunks": [
                    {"web": {"uri": "https://example.org/arithmetic", "title": "Arithmetic"}},
                    {"web": {"uri": "javascript:alert(1)", "title": "bad"}},
                ],
            },
        )
    )
    await send(a, "What is six times seven? Show the code.")
    answer = last_answer(a)
    await expect(answer).to_have_attribute("data-status", "complete")
    await expect(answer.locator(".tools-steps")).to_contain_text("Searched six times seven")
    await expect(answer.locator(".tools-steps")).to_contain_text("print(6 * 7)")
    await expect(answer.locator(".tools-steps")).to_contain_text("42")
    await expect(answer.locator(".body strong")).to_have_text("42")
    await expect(answer.locator(".body pre code")).to_have_text("print(6 * 7)\n")
    source = answer.locator(".sources a")
    await expect(source).to_have_count(1)
    await expect(source).to_have_attribute("href", "https://example.org/arithmetic")
    await expect(a.locator("#title")).to_have_text("What is six times seven? Show the code.")

    phone_ctx = await signed_in_context(env, phone=True)
    phone, errors = await watched(phone_ctx)
    await phone.goto(f"/app#c={conversation_of(a)}")
    await expect(last_answer(phone)).to_have_attribute("data-status", "complete")
    await expect(phone.locator("#sidebar")).to_be_hidden()
    for page in (a, phone):
        await expect(page.locator("#presence")).to_have_text("2 devices watching")
    await shot(a, "chat")
    await shot(phone, "chat-phone")
    device = await a.context.new_page()
    await device.goto("/device")
    await shot(device, "device")
    # The device flow's approval in the browser: the form POST passes the Origin check.
    async with aiohttp.ClientSession() as http:
        async with http.post(
            env.live.url + "/api/auth/device/code", json={"client_id": "cero-cli"}
        ) as r:
            code = await r.json()
    await device.goto(code["verification_uri_complete"].replace(env.live.settings.public_url, ""))
    await expect(device.locator("main")).to_contain_text("A device is asking to sign in")
    await shot(device, "device-approve")
    await device.get_by_role("button", name="Approve").click()
    await expect(device.locator("main")).to_contain_text("Device approved")
    await shot(device, "device-approved")
    await device.close()
    await phone.locator("#toggle-list").click()
    await expect(phone.locator("#sidebar")).to_be_visible()
    await shot(phone, "conversations-phone")
    await phone.goto("/device")
    await shot(phone, "device-phone")
    assert not errors, errors
    await phone_ctx.close()


async def test_keyboard_only(env: Env, devices: Devices) -> None:
    a = devices.a
    await a.locator("#new-chat").focus()
    await a.keyboard.press("Enter")  # a button activated from the keyboard
    await expect(a.locator("#input")).to_be_focused()
    await a.keyboard.type("typed line one")
    await a.keyboard.press("Shift+Enter")  # a new line, not a send
    await a.keyboard.type("line two")
    await expect(a.locator("#input")).to_have_value("typed line one\nline two")
    await a.keyboard.press("Tab")
    await expect(a.locator("#send")).to_be_focused()
    await a.keyboard.press("Enter")
    await expect(last_answer(a)).to_have_attribute(
        "data-text", "You said: typed line one\nline two"
    )
    await expect(a.locator("#input")).to_have_value("")


async def test_conversation_list_paginates_renames_and_deletes(env: Env, devices: Devices) -> None:
    a = devices.a
    for i in range(21):  # more than one page of 20
        async with aiohttp.ClientSession() as http:
            async with post_chat(http, env.live.url, env.token, message=f"bulk {i}") as r:
                assert r.status == 200
                await r.read()
    await a.goto("/app")
    await a.reload()
    items = a.locator("#conversations li[data-conv]")
    await expect(items).to_have_count(20)
    # Grouped by when each was last active: all of these today.
    await expect(a.locator("#conversations li.conv-group")).to_have_text(["Today"])
    await expect(items.first).to_have_text("bulk 20")  # newest first
    await a.locator("#more").click()
    total = len((await rest(env, "GET", "/api/conversations?limit=100"))["conversations"])
    await expect(items).to_have_count(total)
    await expect(a.locator("#more")).to_be_hidden()
    await shot(a, "conversations")

    await items.first.locator("a").click()
    conv = conversation_of(a)
    await expect(a.locator("#title")).to_have_text("bulk 20")
    await a.locator("#rename").click()
    await a.locator("#rename-input").fill("Renamed from the browser")
    await a.locator("#rename-input").press("Enter")
    await expect(a.locator("#title")).to_have_text("Renamed from the browser")
    await expect(items.first).to_have_text("Renamed from the browser")
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    assert data["conversation"]["shortTitle"] == "Renamed from the browser"

    b = devices.b
    await b.goto(f"/app#c={conv}")
    await expect(b.locator("#title")).to_have_text("Renamed from the browser")
    await expect(b.locator("#presence")).to_have_text("2 devices watching")
    a.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await a.locator("#delete").click()
    # B watched it: the account channel says so, and B closes it.
    await expect(b.locator("#notice")).to_contain_text("deleted on another device")
    await expect(b.locator("#title")).to_have_text("New chat")
    await expect(a.locator(f'#conversations li[data-conv="{conv}"]')).to_have_count(0)
    await expect(a.locator("#title")).to_have_text("New chat")
    async with aiohttp.ClientSession() as http:
        url = f"{env.live.url}/api/conversations/{conv}/messages"
        async with http.get(url, headers=bearer(env.token)) as r:
            assert r.status == 404


async def test_a_send_whose_ack_is_lost_is_retried_with_its_key_once(
    env: Env, devices: Devices
) -> None:
    """The socket dies after the server took a send but before its ack arrived: the page
    sends it again with the same clientMessageId, and the server makes it once."""
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="a start") as r:
            assert r.status == 200
            conv = r.headers["X-Conversation-Id"]
            await r.read()
    context = await signed_in_context(env)
    page, errors = await watched(context)
    sends: list[dict[str, Any]] = []
    dropped: list[str] = []
    closing: list[asyncio.Future[None]] = []

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "send":
                sends.append(frame)
            server.send(message)

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "ack" and frame["of"] == "send" and not dropped:
                dropped.append(frame["userMessageId"])  # the ack is lost with the socket
                closing.append(asyncio.ensure_future(ws.close(code=4000, reason="network lost")))
                return
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    await page.route_web_socket(re.compile(r"/api/ws$"), proxy)
    await page.goto(f"/app#c={conv}")
    await expect(page.locator("#conn")).to_have_text("live")
    await send(page, "said once, sent twice")
    await expect(last_answer(page)).to_have_attribute(
        "data-text", "You said: said once, sent twice"
    )
    assert dropped and len(sends) == 2, sends
    assert sends[0]["clientMessageId"] == sends[1]["clientMessageId"]
    await expect(page.locator("article.msg.user", has_text="said once, sent twice")).to_have_count(
        1
    )
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    said = [m for m in data["messages"] if m["content"] == "said once, sent twice"]
    assert [m["id"] for m in said] == dropped
    assert not errors, errors
    await context.close()


async def restart_server(env: Env) -> None:
    """Stop the server and start a new process's worth of app on the same port and
    database: every log starts a new epoch, so old cursors cannot be replayed."""
    from aiohttp.test_utils import TestServer

    from server.app import create_app
    from server.storage import db

    old = env.live
    port = old.server.port
    assert port is not None
    await old.server.close()
    db.bind(old.settings.database_url, lock_timeout=db.lock_timeout(old.settings))
    app = create_app(old.settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    env.live = Live(app=app, server=server, url=old.url, settings=old.settings)


async def test_reconnect_after_a_restart_refetches_on_reset(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    await send(a, "before the restart")
    await expect(last_answer(a)).to_have_attribute("data-text", "You said: before the restart")
    conv = conversation_of(a)
    await b.goto(f"/app#c={conv}")
    await expect(last_answer(b)).to_have_attribute("data-text", "You said: before the restart")
    await devices.a_ctx.set_offline(True)
    await expect(a.locator("#conn")).to_contain_text("offline")
    await restart_server(env)
    # Written while A was away, on a log with a new epoch: A's cursor cannot be replayed.
    async with aiohttp.ClientSession() as http:
        async with post_chat(
            http, env.live.url, env.token, message="while A was away", conversationId=conv
        ) as r:
            assert r.status == 200
            await r.read()
    await devices.a_ctx.set_offline(False)
    for page in (a, b):
        await expect(page.locator("#conn")).to_have_text("live")
        await expect(page.locator("article.msg.user .body").last).to_have_text("while A was away")
        await expect(last_answer(page)).to_have_attribute("data-text", "You said: while A was away")
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    for page in (a, b):
        await expect(page.locator("article.msg")).to_have_count(len(data["messages"]))
    # Live again after the reset: B sends, A sees it.
    await send(b, "after the reset")
    await expect(last_answer(a)).to_have_attribute("data-text", "You said: after the reset")


async def test_the_list_is_grouped_by_date_and_messages_show_their_time(
    env: Env, devices: Devices
) -> None:
    """The list's headings (Today, Yesterday, Previous 7 days, Older) follow each
    conversation's `updatedAt` in the browser's time zone; every message shows its time."""
    from datetime import UTC, datetime, timedelta

    from server.storage.tables import Conversation

    a = devices.a
    ages = {"two days ago": timedelta(days=2), "last month": timedelta(days=40)}
    for title, age in ages.items():
        async with aiohttp.ClientSession() as http:
            async with post_chat(http, env.live.url, env.token, message=title) as r:
                assert r.status == 200
                cid = (await read_ndjson(r))[0]["data"]["conversationId"]
        await (
            Conversation.update({Conversation.updated_at: datetime.now(UTC) - age})
            .where(Conversation.id == cid)
            .run()
        )
    await a.goto("/app")
    await a.reload()
    items = a.locator("#conversations li[data-conv]")
    total = len((await rest(env, "GET", "/api/conversations?limit=100"))["conversations"])
    await expect(items.first).to_be_visible()
    if await a.locator("#more").is_visible():
        await a.locator("#more").click()
    await expect(items).to_have_count(total)
    headings = a.locator("#conversations li.conv-group")
    await expect(headings.first).to_have_text("Today")
    await expect(headings.last).to_have_text("Older")
    texts = await headings.all_text_contents()
    assert texts == ["Today", "Previous 7 days", "Older"], texts
    older = a.locator("#conversations li.conv-group", has_text="Older")
    follows = older.locator("xpath=following-sibling::li[1]")
    await expect(follows).to_have_text("last month")

    await follows.locator("a").click()
    time = a.locator("article.msg.user time.msg-time").first
    await expect(time).to_have_count(1)
    stamp = await time.get_attribute("datetime")
    assert stamp is not None and stamp.endswith("Z")
    shown = (await time.text_content() or "").strip()
    assert re.fullmatch(r"\d\d?:\d\d(\s?[AP]M)?", shown), shown  # today: the time only


async def test_search_box_finds_a_conversation_and_opens_it(env: Env, devices: Devices) -> None:
    """The search box over the list (docs/api.md, Search): matched words marked, a result
    opens its conversation, Escape brings the list back."""
    a = devices.a
    async with aiohttp.ClientSession() as http:
        async with post_chat(
            http, env.live.url, env.token, message="notes on the axolotl <b>tank</b>"
        ) as r:
            assert r.status == 200
            cid = (await read_ndjson(r))[0]["data"]["conversationId"]
    await a.goto("/app")
    await a.reload()
    results = a.locator("#search-results li[data-conv]")
    # The page's first account-channel subscribe refetches the list, which may land after
    # a search typed at once and bring the list back: search again then.
    for _ in range(3):
        await a.locator("#search-input").fill("axolotl")
        await a.locator("#search-input").press("Enter")
        try:
            await expect(results.first).to_be_visible(timeout=4000)
            await expect(a.locator("#conversations")).to_be_hidden(timeout=1000)
            break
        except AssertionError:
            continue
    await expect(results.first).to_be_visible()
    await expect(a.locator("#conversations")).to_be_hidden()
    hit = a.locator(f'#search-results li[data-conv="{cid}"]').first
    await expect(hit.locator("mark").first).to_have_text(re.compile("axolotl", re.I))
    await expect(a.locator("#search-results b")).to_have_count(0)  # text, never markup
    await hit.locator("a").click()
    await expect(a.locator("#title")).to_contain_text("axolotl")
    assert conversation_of(a) == cid
    await a.locator("#search-input").fill("no-such-word-anywhere")
    await a.locator("#search-input").press("Enter")
    await expect(a.locator("#search-results li.empty")).to_be_visible()
    await a.locator("#search-input").press("Escape")
    await expect(a.locator("#search-results")).to_be_hidden()
    await expect(a.locator("#conversations")).to_be_visible()


async def test_instructions_are_edited_in_the_page(env: Env, devices: Devices) -> None:
    """The Instructions panel (docs/api.md, Instructions): the user's own text and the open
    conversation's, saved over REST, shown again when the panel reopens."""
    a = devices.a
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="instructions here") as r:
            assert r.status == 200
            cid = (await read_ndjson(r))[0]["data"]["conversationId"]
    await a.goto(f"/app#c={cid}")
    await expect(a.locator("#title")).to_contain_text("instructions here")
    await a.locator("#open-instructions").click()
    await expect(a.locator("#user-instructions")).to_be_focused()
    await a.locator("#user-instructions").fill("I am a botanist; use metric units.")
    await a.locator("#user-instructions-form button[type=submit]").click()
    await expect(a.locator("#instructions-status")).to_contain_text("Saved")
    assert (await rest(env, "GET", "/api/user/instructions"))["instructions"] == (
        "I am a botanist; use metric units."
    )
    await a.locator("#conv-instructions").fill("Answer in French.")
    await a.locator("#conv-instructions-form button[type=submit]").click()
    await expect(a.locator("#instructions-status")).to_contain_text("this conversation")
    data = await rest(env, "GET", f"/api/conversations/{cid}/messages")
    assert data["conversation"]["instructions"] == "Answer in French."
    await a.keyboard.press("Escape")
    await expect(a.locator("#instructions")).to_be_hidden()
    await a.locator("#open-instructions").click()
    await expect(a.locator("#conv-instructions")).to_have_value("Answer in French.")
    await a.locator("#user-instructions").fill("")
    await a.locator("#user-instructions-form button[type=submit]").click()
    # "Saved" may still be the first save's text: wait for the stored value itself.
    for _ in range(100):
        if (await rest(env, "GET", "/api/user/instructions"))["instructions"] is None:
            break
        await asyncio.sleep(0.05)
    assert (await rest(env, "GET", "/api/user/instructions"))["instructions"] is None
    await a.locator("#close-instructions").click()


async def test_sessions_revoke_and_sign_out(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    await a.locator("#open-sessions").click()
    rows = a.locator("#session-list li")
    await expect(rows.filter(has_text="this device")).to_have_count(1)
    await expect(rows.filter(has_text="second device").first).to_be_visible()
    await shot(a, "sessions")
    b_session = await b.evaluate("fetch('/api/auth/get-session').then((r) => r.json())")
    row = a.locator(f'#session-list li[data-session="{b_session["session"]["id"]}"]')
    await row.locator("button").click()
    await expect(row).to_have_count(0)
    # B's socket is closed with 4001 at once: it shows the sign-in view.
    await expect(b.locator("#signin")).to_be_visible()
    await a.keyboard.press("Escape")
    await expect(a.locator("#sessions")).to_be_hidden()
    await a.locator("#sign-out").click()
    await expect(a.locator("#signin")).to_be_visible()
    # A deliberate sign-out says so; only a session ended elsewhere says "ended".
    await expect(a.locator("#signin p").first).to_have_text("You signed out.")
    await expect(b.locator("#signin p").first).to_have_text("Your session ended. Sign in again.")
    assert await a.evaluate("fetch('/api/auth/get-session').then((r) => r.json())") is None
