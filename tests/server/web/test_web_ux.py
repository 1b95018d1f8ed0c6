"""The page's composer, failures, controls and accessibility (issue 25) in a real browser.

Failures are said in plain words with what may cure them (Retry, another model, a shorter
message), a refused send keeps its text; a counter against the server's message limit;
Send waits while an answer streams (Esc or Stop ends it, and the focus stays in the
composer); the model picker offers only models that answer, the tool picks are remembered;
presence only when another device watches; the phone layout (no horizontal scroll while
renaming, 44 px touch targets, no Shift+Enter hint on touch screens); the polite live
region; and axe-core finds no serious or critical violation in the main states. Set up as
in ``test_web_app.py``, whose helpers this module uses.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from server.auth.local import issue_link
from server.auth.sessions import SESSIONS
from standins.gemini import Script
from tests.auth_helpers import codec
from tests.conftest import IN_CI
from tests.live_clients import post_chat
from tests.server.web.test_web_app import (
    DESKTOP,
    PHONE,
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
    from playwright.async_api import BrowserContext, Page, WebSocketRoute, expect
except ImportError:  # pragma: no cover - the dev dependencies include playwright
    if IN_CI:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.asyncio(loop_scope="module")

AXE = Path(__file__).resolve().parents[2] / "compat" / "node_modules" / "axe-core" / "axe.min.js"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with browser_env(tmp_path_factory, "ux") as running:
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


async def new_conversation(env: Env, message: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message=message) as r:
            assert r.status == 200
            conv = r.headers["X-Conversation-Id"]
            await r.read()
    return conv


async def phone_context(env: Env, *, bypass_csp: bool = False) -> BrowserContext:
    """A phone: 390 × 844, a touch screen, signed in as another device of the user."""
    context = await env.browser.new_context(
        viewport=PHONE,
        has_touch=True,
        is_mobile=True,
        color_scheme="light",
        base_url=env.live.url,
        bypass_csp=bypass_csp,
    )
    token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="phone")
    c = codec(env.live.settings)
    await context.add_cookies(
        [{"name": c.session_name, "value": c.session_value(token), "url": env.live.url}]
    )
    return context


async def test_a_refused_send_is_said_plainly_keeps_its_text_and_retries(
    env: Env, devices: Devices
) -> None:
    """A proxy on the socket refuses sends with the server's codes (and raw server words
    that must not show); the page says what happened, puts the text back, offers Retry."""
    conv = await new_conversation(env, "refusals here")
    context = await signed_in_context(env)
    page, errors = await watched(context)
    refusals = [
        {"code": "overloaded", "error": "admission: cpu 0.97 loopLag 0.3 queue full"},
        {"code": "unknown_model", "error": "aiModel: 'x' is not in the catalog"},
    ]

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "send" and refusals:
                ws.send(json.dumps({"type": "fault", **refusals.pop(0)}))
                return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(ws.send)

    await page.route_web_socket(re.compile(r"/api/ws$"), proxy)
    await page.goto(f"/app#c={conv}")
    await expect(page.locator("#conn")).to_have_text("live")
    await send(page, "please answer this")
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("The server is busy right now")
    await expect(notice).not_to_contain_text("admission")
    await expect(page.locator("#input")).to_have_value("please answer this")
    await expect(page.locator("article.msg.user", has_text="please answer this")).to_have_attribute(
        "data-status", "error"
    )
    await shot(page, "send-refused")
    await notice.get_by_role("button", name="Retry").click()
    # The second refusal: the model is gone; its action goes to the model picker.
    await expect(notice).to_contain_text("Choose another model")
    await expect(notice).not_to_contain_text("catalog")
    await notice.get_by_role("button", name="Choose another model").click()
    await expect(page.locator("#model")).to_be_focused()
    await expect(page.locator("#input")).to_have_value("please answer this")
    await page.locator("#send").click()
    await expect(last_answer(page)).to_have_attribute("data-text", "You said: please answer this")
    await expect(page.locator("article.msg.user", has_text="please answer this")).to_have_count(1)
    await expect(page.locator("#input")).to_have_value("")
    await expect(notice).to_be_hidden()
    assert not errors, errors
    await context.close()


async def test_a_failed_answer_says_why_and_retries(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    await a.locator("#new-chat").click()
    env.fake.enqueue(Script(error_before=[503, 503, 503]))  # every attempt fails
    await send(a, "this one fails")
    conv_a = a.locator("article.msg.assistant")
    await expect(last_answer(a)).to_have_attribute("data-status", "error")
    await expect(last_answer(a).locator(".sources")).to_have_text(
        re.compile("^The model is not answering right now.*Retry$")
    )
    await expect(a.locator("#announce")).to_contain_text("The answer failed.")
    env.fake.scripts.clear()  # the script's stream after its errors: no request comes
    await b.goto(f"/app#c={conversation_of(a)}")  # stored: no code, still a plain word
    await expect(last_answer(b).locator(".sources")).to_have_text("This answer failed. Retry")
    await last_answer(a).get_by_role("button", name="Retry").click()
    # Retry regenerates: a new version of the answer, from the (working again) model.
    await expect(last_answer(a)).to_have_attribute("data-text", "You said: this one fails")
    await expect(conv_a).to_have_count(1)
    await expect(last_answer(b)).to_have_attribute("data-text", "You said: this one fails")


async def test_the_length_counter_and_too_long_a_message(env: Env, devices: Devices) -> None:
    a = devices.a
    models = await rest(env, "GET", "/api/models")
    limit = models["maxMessageChars"]
    assert limit == 32_000
    await a.locator("#new-chat").click()
    box = a.locator("#input")
    await box.fill("short")
    await expect(a.locator("#count")).to_be_hidden()  # nothing to count yet
    await box.fill("x" * (limit - 10))
    await expect(a.locator("#count")).to_have_text("31,990 / 32,000")
    await expect(a.locator("#send")).to_be_enabled()
    await box.fill("y" * (limit + 5))
    await expect(a.locator("#count")).to_have_text("32,005 / 32,000: 5 too many")
    await expect(a.locator("#send")).to_be_disabled()
    await box.press("Enter")  # not sent: told to shorten it, the text kept
    await expect(a.locator("#notice")).to_contain_text("Your message is too long")
    await expect(a.locator("#messages article")).to_have_count(0)
    await expect(box).to_have_value("y" * (limit + 5))
    await a.locator("#notice").get_by_role("button", name="Shorten the message").click()
    await expect(box).to_be_focused()
    await box.fill("")
    await expect(a.locator("#send")).to_be_enabled()


async def test_send_waits_while_answering_and_esc_or_stop_end_it(
    env: Env, devices: Devices
) -> None:
    a = devices.a
    await a.locator("#new-chat").click()
    for how in ("Escape", "Stop"):
        release = asyncio.Event()
        env.fake.enqueue(Script(chunks=["Thinking", " hard"], release_after=1, release=release))
        await send(a, f"stop me with {how}")
        await expect(last_answer(a).locator(".body")).to_have_text("Thinking")
        await expect(a.locator("#send")).to_be_disabled()
        await expect(a.locator("#stop")).to_be_visible()
        await a.locator("#input").fill("the next question")
        await a.locator("#input").press("Enter")  # waits: nothing sent, the text stays
        await expect(a.locator("#input")).to_have_value("the next question")
        await expect(a.locator("article.msg.user", has_text="the next question")).to_have_count(0)
        if how == "Escape":
            await a.locator("#input").press("Escape")  # Esc in the composer stops it
        else:
            await a.locator("#stop").click()
        await expect(last_answer(a)).to_have_attribute("data-status", "cancelled")
        await expect(a.locator("#stop")).to_be_hidden()
        await expect(a.locator("#input")).to_be_focused()  # not <body>
        await expect(a.locator("#send")).to_be_enabled()
        await expect(a.locator("#announce")).to_have_text("The answer was stopped.")
        release.set()
        await a.locator("#input").fill("")


async def test_the_model_picker_offers_only_answering_models_and_tools_are_remembered(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    models = (await rest(env, "GET", "/api/models?all=true"))["models"]
    shut = [m for m in models if m["status"] == "shut_down"]
    assert shut  # the catalog has some
    offered = await a.locator("#model option").evaluate_all("(os) => os.map((o) => o.value)")
    assert offered == [m["id"] for m in models if m["status"] != "shut_down"]
    deprecated = next(m for m in models if m["status"] == "deprecated")
    successor = next(m for m in models if m["id"] == deprecated["successor"])
    label = a.locator(f'#model option[value="{deprecated["id"]}"]')
    await expect(label).to_contain_text(f"deprecated: use {successor['name']}")

    # The picks are the user's preferences (GET/PUT /api/user/preferences): kept across
    # chats, reloads and devices.
    await a.locator("#new-chat").click()
    await a.locator("#tool-code_execution").check()
    await a.locator("#tool-url_context").check()
    await a.locator("#tool-url_context").uncheck()
    await until_preferences(env, {"tools": ["code_execution"], "aiModel": models[0]["id"]})
    await a.reload()
    await expect(a.locator("#conn")).to_have_text("live")
    await expect(a.locator("#tool-code_execution")).to_be_checked()
    await expect(a.locator("#tool-url_context")).not_to_be_checked()
    await expect(a.locator("#tool-google_search")).not_to_be_checked()
    # A model without tools and back: the picks come back with it.
    await a.locator("#model").select_option("demo")
    await expect(a.locator("#tools input")).to_have_count(0)
    await a.locator("#model").select_option(deprecated["id"])
    await expect(a.locator("#tool-code_execution")).to_be_checked()
    await until_preferences(env, {"tools": ["code_execution"], "aiModel": deprecated["id"]})
    await b.reload()  # another device
    await expect(b.locator("#model")).to_have_value(deprecated["id"])
    await expect(b.locator("#tool-code_execution")).to_be_checked()
    # A remembered model that has since shut down shows as the one that answers it.
    retired = next(m for m in shut if m["successor"] in offered)
    await rest(env, "PUT", "/api/user/preferences", json={"tools": [], "aiModel": retired["id"]})
    await a.reload()
    await expect(a.locator("#model")).to_have_value(retired["successor"])
    # Sends take the picks.
    await a.locator("#model").select_option(models[0]["id"])
    await a.locator("#tool-code_execution").check()
    await send(a, "with my tools")
    await expect(last_answer(a)).to_have_attribute("data-status", "complete")
    tools = env.fake.requests[-1].body.get("tools") or []
    assert any("codeExecution" in tool or "code_execution" in tool for tool in tools), tools


async def until_preferences(env: Env, expected: dict[str, Any]) -> None:
    """Wait (bounded) until the page's PUTs have stored ``expected``."""
    stored = None
    for _ in range(200):
        stored = await rest(env, "GET", "/api/user/preferences")
        if stored == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(stored)


async def test_presence_only_when_another_device_watches(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    conv = await new_conversation(env, "who is watching")
    await b.locator("#new-chat").click()
    await a.goto(f"/app#c={conv}")
    await expect(a.locator("#title")).to_have_text("who is watching")
    await expect(a.locator("#conn")).to_have_text("live")
    await expect(a.locator("#presence")).to_be_hidden()  # alone: nothing said
    await b.goto(f"/app#c={conv}")
    for page in (a, b):
        await expect(page.locator("#presence")).to_have_text("2 devices watching")
    await b.locator("#new-chat").click()
    await expect(a.locator("#presence")).to_be_hidden()


async def test_phone_rename_touch_targets_and_placeholder(env: Env, devices: Devices) -> None:
    conv = await new_conversation(env, "a rather long conversation title for a small screen")
    context = await phone_context(env)
    page, errors = await watched(context)
    await page.goto(f"/app#c={conv}")
    await expect(last_answer(page)).to_have_attribute("data-status", "complete")
    placeholder = await page.locator("#input").get_attribute("placeholder")
    assert placeholder == "Message Cero", placeholder  # no Shift+Enter on a touch screen

    # Every control one can touch is at least 44 × 44 px (a checkbox's target is its label).
    small = await page.evaluate(
        """() => Array.from(document.querySelectorAll([
              'button', 'a[href]', 'select', 'textarea', 'input:not([type=checkbox])',
              'label:has(input[type=checkbox])'].join(', ')))
            .filter((n) => n.offsetParent !== null && !n.closest('.body, .sources'))
            .map((n) => [n.id || n.textContent.trim().slice(0, 30), n.getBoundingClientRect()])
            .filter(([, r]) => r.width < 44 || r.height < 44)
            .map(([name, r]) => `${name}: ${Math.round(r.width)}x${Math.round(r.height)}`)"""
    )
    assert not small, small
    await page.locator("#toggle-list").tap()
    await expect(page.locator("#sidebar")).to_be_visible()
    small_items = await page.evaluate(
        """() => Array.from(document.querySelectorAll(
              '#sidebar a, #sidebar button, #sidebar input'))
            .filter((n) => n.offsetParent !== null)
            .map((n) => n.getBoundingClientRect()).filter((r) => r.height < 44).length"""
    )
    assert small_items == 0
    await page.locator("#toggle-list").tap()

    # Rename fits the width: no horizontal scroll, Save and Cancel in view.
    await page.locator("#rename").tap()
    await expect(page.locator("#rename-input")).to_be_focused()
    await shot(page, "rename-phone")
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    for name in ("Save", "Cancel"):
        await expect(
            page.locator("#rename-form").get_by_role("button", name=name)
        ).to_be_in_viewport(ratio=1)
    await page.locator("#rename-input").press("Escape")
    await expect(page.locator("#rename-form")).to_be_hidden()
    await expect(page.locator("#input")).to_be_focused()  # not <body>
    await expect(page.locator("#title")).to_be_visible()
    assert not errors, errors
    await context.close()


async def test_the_log_announces_answers_once(env: Env, devices: Devices) -> None:
    """The log itself is not live (each token would be read out); the polite region says
    each answer once it has ended, and a message written on another device."""
    a, b = devices.a, devices.b
    conv = await new_conversation(env, "announce things")
    await a.goto(f"/app#c={conv}")
    await b.goto(f"/app#c={conv}")
    for page in (a, b):
        await expect(page.locator("#presence")).to_have_text("2 devices watching")
    assert await a.locator("#messages").get_attribute("aria-live") == "off"
    assert await a.locator("#announce").get_attribute("aria-live") == "polite"
    await a.evaluate(
        """() => { window.__said = [];
          new MutationObserver(() => { const t = document.getElementById('announce').textContent;
            if (t) window.__said.push(t); })
          .observe(document.getElementById('announce'),
            { childList: true, characterData: true, subtree: true }); }"""
    )
    env.fake.enqueue(Script(chunks=["One", " two", " three", " four."]))
    await send(b, "count for me")
    await expect(last_answer(a)).to_have_attribute("data-text", "One two three four.")
    await expect(a.locator("#announce")).to_have_text("Cero answered: One two three four.")
    said = await a.evaluate("window.__said")
    assert said == [
        "You wrote, on another device: count for me",
        "Cero answered: One two three four.",
    ], said


async def axe(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def test_axe_finds_no_serious_violation(env: Env, devices: Devices) -> None:
    """axe-core (tests/compat's dev dependency) run in Chromium: the signed-in list, an open
    conversation, the sessions panel, at desktop and phone width."""
    if not AXE.exists():
        problem = f"axe-core not installed ({AXE}): cd tests/compat && npm ci"
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    # The page's CSP refuses an injected script (rightly): this context bypasses it for axe.
    a_ctx = await env.browser.new_context(
        viewport=DESKTOP, color_scheme="light", base_url=env.live.url, bypass_csp=True
    )
    token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="axe")
    c = codec(env.live.settings)
    await a_ctx.add_cookies(
        [{"name": c.session_name, "value": c.session_value(token), "url": env.live.url}]
    )
    a, a_errors = await watched(a_ctx)
    conv = await new_conversation(env, "Check **this** page with `axe`")
    await a.goto("/app")
    await expect(a.locator("#conversations li[data-conv]").first).to_be_visible()
    states: dict[str, list[dict[str, Any]]] = {"list": await axe(a)}
    await a.goto(f"/app#c={conv}")
    await expect(last_answer(a)).to_have_attribute("data-status", "complete")
    states["conversation"] = await axe(a)
    await a.locator("#open-sessions").click()
    await expect(a.locator("#session-list li[data-session]").first).to_be_visible()
    states["sessions"] = await axe(a)
    await a.keyboard.press("Escape")
    assert not a_errors, a_errors
    await a_ctx.close()
    phone = await phone_context(env, bypass_csp=True)
    page, errors = await watched(phone)
    await page.goto(f"/app#c={conv}")
    await expect(last_answer(page)).to_have_attribute("data-status", "complete")
    states["phone conversation"] = await axe(page)
    await page.locator("#toggle-list").tap()
    states["phone list"] = await axe(page)
    assert not errors, errors
    await phone.close()
    assert all(not found for found in states.values()), states


async def test_sessions_show_device_names_and_last_active(env: Env, devices: Devices) -> None:
    a = devices.a
    await env.live.app[SESSIONS].start(
        env.user_id,
        user_agent=(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
        ),
    )
    await env.live.app[SESSIONS].start(env.user_id, user_agent="cero-cli/0.4.0")
    await a.locator("#open-sessions").click()
    rows = a.locator("#session-list li[data-session]")
    mine = rows.filter(has_text="this device")
    await expect(mine.locator("strong")).to_have_text("Chrome on Linux")
    await expect(mine).to_contain_text(re.compile(r"active (just now|\d+ minutes? ago)"))
    await expect(rows.filter(has_text="Safari on iPhone")).to_have_count(1)
    await expect(rows.filter(has_text="Cero CLI (terminal)")).to_have_count(1)
    await expect(
        rows.filter(has_text="Safari on iPhone").get_by_role(
            "button", name="Revoke Safari on iPhone"
        )
    ).to_be_visible()
    await expect(a.locator("#revoke-others")).to_be_visible()
    await shot(a, "sessions-named")
    await a.keyboard.press("Escape")
    await expect(a.locator("#open-sessions")).to_be_focused()
