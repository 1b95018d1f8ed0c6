"""The web page's conversation-branch controls (docs/api.md "Branches") in a real browser.

Regenerate, Copy and Continue on an answer, Edit (inline) on a message of yours, and the
``‹ n / m ›`` switcher between versions: two browser contexts signed in as the same local
user watch one conversation, one acts and the other follows live. Answers come from the
Gemini stand-in (its echo, or a script held mid-answer with ``Script.release``). The server,
browser and sign-in are set up as in ``test_web_app.py``, whose helpers this module uses.

The tests that drive the branch frames (``regenerate``, ``edit``, ``continue``, ``switch``)
need the server's side of issue 23; the others (keyboard reach, disabled while answering,
Continue's visibility, refusals shown) run against any server.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from server.auth.local import issue_link
from server.auth.sessions import SESSIONS
from standins.gemini import Script
from tests.conftest import IN_CI
from tests.live_clients import post_chat
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
    async with browser_env(tmp_path_factory, "branches") as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def devices(env: Env) -> AsyncIterator[Devices]:
    """Device A signed in with the local sign-in link (and allowed the clipboard); device B
    a second session of the same user."""
    a_ctx = await new_context(env)
    await a_ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=env.live.url)
    a, a_errors = await watched(a_ctx)
    await a.goto(f"/auth/local?token={await issue_link(60)}")
    await expect(a.locator("#who")).to_have_text("Local user")
    session = await a.evaluate("fetch('/api/auth/get-session').then((r) => r.json())")
    env.user_id = session["user"]["id"]
    env.token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="tests")
    b_ctx = await signed_in_context(env)
    b, b_errors = await watched(b_ctx)
    await b.goto("/app")
    await expect(b.locator("#who")).to_have_text("Local user")
    for page in (a, b):
        await expect(page.locator("#conn")).to_have_text("live")
    yield Devices(a=a, b=b, a_ctx=a_ctx, b_ctx=b_ctx, errors=a_errors)
    assert not a_errors, a_errors
    assert not b_errors, b_errors
    await a_ctx.close()
    await b_ctx.close()


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def fresh_scripts(env: Env) -> AsyncIterator[None]:
    """A script a test left unplayed (its command refused) is not played to the next one."""
    yield
    env.fake.scripts.clear()


def turn(page: Page, role: str, nth: int = -1) -> Locator:
    """One message (its article and its action bar): the last one of `role` by default."""
    return page.locator(f"#messages > .turn.{role}").nth(nth)


def action(message: Locator, name: str) -> Locator:
    return message.locator(f'.msg-actions [data-action="{name}"]')


async def new_chat_on_both(devices: Devices, first: str) -> str:
    """A new conversation started on A with `first`, open on B too; its id."""
    a, b = devices.a, devices.b
    await a.locator("#new-chat").click()
    await send(a, first)
    await expect(last_answer(a)).to_have_attribute("data-text", f"You said: {first}")
    conv = conversation_of(a)
    await b.goto(f"/app#c={conv}")
    await expect(last_answer(b)).to_have_attribute("data-text", f"You said: {first}")
    for page in (a, b):
        await expect(page.locator("#presence")).to_have_text("2 devices watching")
    return conv


async def focused_label(page: Page) -> str:
    label: str = await page.evaluate(
        "(() => { const e = document.activeElement;"
        " return e.id || e.getAttribute('aria-label') || e.textContent; })()"
    )
    return label


# ---------- against any server ----------


async def test_controls_are_buttons_reachable_by_keyboard_and_wait_while_answering(
    env: Env, devices: Devices
) -> None:
    a = devices.a
    await a.locator("#new-chat").click()
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=["Held", " answer."], release_after=1, release=release))
    await send(a, "keyboard question")
    await expect(last_answer(a).locator(".body")).to_have_text("Held")
    user, answer = turn(a, "user"), turn(a, "assistant")
    # While it answers, nothing that asks the server can be pressed (it would say 409):
    # marked aria-disabled (which Playwright counts as disabled), so a focus stays put.
    await expect(action(user, "edit")).to_be_disabled()
    await expect(action(answer, "regenerate")).to_be_disabled()
    await expect(action(answer, "copy")).to_be_enabled()
    await expect(action(answer, "continue")).to_be_hidden()
    await expect(answer.locator(".switcher")).to_be_hidden()  # one version only
    release.set()
    await expect(last_answer(a)).to_have_attribute("data-status", "complete")
    await expect(action(user, "edit")).to_be_enabled()
    await expect(action(answer, "regenerate")).to_be_enabled()
    await expect(action(answer, "continue")).to_be_hidden()  # it ended with STOP
    await shot(a, "branches-actions")

    # Tab from the chat's head through the messages to the composer: real buttons, in order.
    await a.locator("#delete").focus()
    labels = []
    for _ in range(8):
        await a.keyboard.press("Tab")
        label = await focused_label(a)
        if label == "model":
            break
        labels.append(label)
    assert labels == ["Edit message", "Copy message", "Regenerate answer", "Copy answer"], labels
    await a.keyboard.press("Shift+Tab")
    await expect(action(answer, "copy")).to_be_focused()
    outline = await a.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # the focus is visible
    await a.keyboard.press("Enter")
    await expect(action(answer, "copy")).to_have_text("Copied")
    assert await a.evaluate("navigator.clipboard.readText()") == "Held answer."

    # Edit opens inline; Escape (or Cancel) leaves it with the text unchanged.
    for _ in range(3):  # back past Regenerate and the message's Copy
        await a.keyboard.press("Shift+Tab")
    await expect(action(user, "edit")).to_be_focused()
    await a.keyboard.press("Enter")
    area = user.locator(".editor textarea")
    await expect(area).to_be_focused()
    await expect(area).to_have_value("keyboard question")
    await a.keyboard.type(" and more")
    await shot(a, "branches-edit")
    await a.keyboard.press("Escape")
    await expect(user.locator(".editor")).to_have_count(0)
    await expect(action(user, "edit")).to_be_focused()
    await expect(user.locator(".body")).to_have_text("keyboard question")
    await a.keyboard.press("Enter")
    await expect(area).to_have_value("keyboard question")  # a new edit starts from the text
    await a.keyboard.press("Tab")
    await expect(user.get_by_role("button", name="Save & send")).to_be_focused()
    await a.keyboard.press("Tab")
    await expect(user.get_by_role("button", name="Cancel")).to_be_focused()
    await a.keyboard.press("Enter")
    await expect(user.locator(".editor")).to_have_count(0)
    await expect(action(user, "edit")).to_be_focused()


async def test_continue_is_offered_on_a_cut_short_last_answer_only(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    await a.locator("#new-chat").click()
    env.fake.enqueue(Script(chunks=["Cut", " short"], finish_reason="MAX_TOKENS"))
    await send(a, "a long story")
    await expect(last_answer(a)).to_have_attribute("data-text", "Cut short")
    conv = conversation_of(a)
    await b.goto(f"/app#c={conv}")  # B reads it over REST: its finishReason says so too
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-text", "Cut short")
        await expect(action(turn(page, "assistant"), "continue")).to_be_visible()
    # Once it is not the last answer any more, and for an answer that ended normally: none.
    await send(a, "next one")
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-text", "You said: next one")
        await expect(page.locator('[data-action="continue"]:visible')).to_have_count(0)
    # A stopped answer can be continued, on both devices.
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=["Stopped", " here"], release_after=1, release=release))
    await send(b, "stop me")
    await expect(last_answer(a).locator(".body")).to_have_text("Stopped")
    await a.locator("#stop").click()
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "cancelled")
        await expect(action(turn(page, "assistant"), "continue")).to_be_visible()
        await expect(action(turn(page, "assistant"), "continue")).to_be_enabled()
        await expect(page.locator('[data-action="continue"]:visible')).to_have_count(1)
    release.set()


async def test_a_refused_command_says_why_and_the_controls_come_back(
    env: Env, devices: Devices
) -> None:
    """The server's refusals (faults) are shown; here a proxy on the socket answers the
    branch frames itself, so this runs against any server."""
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, env.live.url, env.token, message="refuse me") as r:
            assert r.status == 200
            conv = r.headers["X-Conversation-Id"]
            await r.read()
    context = await signed_in_context(env)
    page, errors = await watched(context)
    frames: list[dict[str, Any]] = []
    faults = {
        "regenerate": {"code": "conversation_busy", "error": "This conversation is busy"},
        "edit": {"code": "invalid_request", "error": "message: must not be empty"},
    }

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] in faults:
                frames.append(frame)
                ws.send(json.dumps({"type": "fault", **faults[frame["type"]]}))
                return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(ws.send)

    await page.route_web_socket(re.compile(r"/api/ws$"), proxy)
    await page.goto(f"/app#c={conv}")
    await expect(last_answer(page)).to_have_attribute("data-text", "You said: refuse me")
    answer_id = await last_answer(page).get_attribute("data-id")
    user_id = await page.locator("article.msg.user").last.get_attribute("data-id")

    await action(turn(page, "assistant"), "regenerate").click()
    await expect(page.locator("#notice")).to_contain_text("still answering")
    await expect(action(turn(page, "assistant"), "regenerate")).to_be_enabled()
    assert frames[-1]["type"] == "regenerate"
    assert frames[-1]["conversationId"] == conv and frames[-1]["messageId"] == answer_id
    assert frames[-1]["clientMessageId"] and frames[-1]["aiModel"]

    user = turn(page, "user")
    await action(user, "edit").click()
    await user.locator(".editor textarea").fill("changed")
    await user.get_by_role("button", name="Save & send").click()
    # In plain words: not the server's field text.
    await expect(page.locator("#notice")).to_contain_text(
        "Edit refused: This message cannot be sent as it is"
    )
    # The editor stays, with the draft, ready to try again.
    await expect(user.locator(".editor textarea")).to_have_value("changed")
    await expect(user.locator(".editor textarea")).to_be_focused()
    await expect(user.get_by_role("button", name="Save & send")).to_be_enabled()
    assert frames[-1] | {"clientMessageId": "k", "aiModel": "m"} == {
        "type": "edit",
        "conversationId": conv,
        "messageId": user_id,
        "message": "changed",
        "clientMessageId": "k",
        "aiModel": "m",
    }
    await user.get_by_role("button", name="Cancel").click()
    await expect(user.locator(".body")).to_have_text("refuse me")
    assert not errors, errors
    await context.close()


# ---------- these need the server's Branches API (issue 23) ----------


async def test_regenerate_streams_on_both_devices_and_the_switcher_goes_back(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    conv = await new_chat_on_both(devices, "tell me")
    first_id = await last_answer(a).get_attribute("data-id")
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=["Second", " take."], release_after=1, release=release))
    await action(turn(a, "assistant"), "regenerate").click()
    # The new answer replaces the old one on both devices and streams into itself.
    for page in (a, b):
        await expect(last_answer(page).locator(".body")).to_have_text("Second")
        await expect(page.locator("article.msg.assistant")).to_have_count(1)
        await expect(page.locator(f'article[data-id="{first_id}"]')).to_have_count(0)
        await expect(action(turn(page, "assistant"), "regenerate")).to_be_disabled()
        await expect(page.locator("#stop")).to_be_visible()
    release.set()
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "complete")
        await expect(last_answer(page)).to_have_attribute("data-text", "Second take.")
        answer = turn(page, "assistant")
        await expect(answer.locator(".switcher .count")).to_have_text("2 / 2")
        await expect(action(answer, "prev")).to_be_enabled()
        await expect(action(answer, "next")).to_be_disabled()
        await expect(page.locator("article.msg.user")).to_have_count(1)
    second_id = await last_answer(a).get_attribute("data-id")
    assert second_id != first_id
    await expect(last_answer(b)).to_have_attribute("data-id", second_id or "")
    await shot(a, "branches-regenerated")
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    assert data["activeLeafId"] == second_id
    assert data["messages"][-1]["siblingIds"] == [first_id, second_id]

    # B goes back to the first version with the keyboard; A follows.
    await action(turn(b, "assistant"), "prev").focus()
    await b.keyboard.press("Enter")
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-id", first_id or "")
        await expect(last_answer(page)).to_have_attribute("data-text", "You said: tell me")
        await expect(turn(page, "assistant").locator(".switcher .count")).to_have_text("1 / 2")
    # The redrawn page gives the focus back to ‹ (unusable now: there is no earlier version).
    await expect(action(turn(b, "assistant"), "prev")).to_be_focused()
    await expect(action(turn(b, "assistant"), "prev")).to_be_disabled()
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    assert data["activeLeafId"] == first_id
    # And forward again from A.
    await action(turn(a, "assistant"), "next").click()
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-id", second_id or "")
        await expect(last_answer(page)).to_have_attribute("data-text", "Second take.")


async def test_edit_inline_makes_a_new_version_on_both_devices(env: Env, devices: Devices) -> None:
    a, b = devices.a, devices.b
    conv = await new_chat_on_both(devices, "first")
    await send(a, "second")
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-text", "You said: second")
        await expect(page.locator("article.msg")).to_have_count(4)
    first = turn(a, "user", 0)
    await action(first, "edit").click()
    area = first.locator(".editor textarea")
    await expect(area).to_be_focused()
    await expect(area).to_have_value("first")
    await area.fill("first, edited")
    await area.press("Control+Enter")  # Enter with a modifier sends; Enter alone is a line
    # The path below the edited message is replaced by the new version and its answer.
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-text", "You said: first, edited")
        await expect(page.locator("article.msg")).to_have_count(2)
        await expect(page.locator("article.msg.user .body")).to_have_text("first, edited")
        await expect(turn(page, "user", 0).locator(".switcher .count")).to_have_text("2 / 2")
    await expect(a.locator(".editor")).to_have_count(0)
    await expect(action(turn(a, "user", 0), "edit")).to_be_focused()  # not lost with the editor
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    assert [m["content"] for m in data["messages"]] == ["first, edited", "You said: first, edited"]
    assert data["messages"][0]["parentId"] is None
    assert data["messages"][0]["siblingCount"] == 2

    # B switches back to the first version: its whole path, down to its newest leaf.
    await action(turn(b, "user", 0), "prev").click()
    for page in (a, b):
        await expect(page.locator("article.msg")).to_have_count(4)
        await expect(page.locator("article.msg.user .body").first).to_have_text("first")
        await expect(last_answer(page)).to_have_attribute("data-text", "You said: second")
        await expect(turn(page, "user", 0).locator(".switcher .count")).to_have_text("1 / 2")


async def test_continue_after_stop_grows_the_same_answer_on_both_devices(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    conv = await new_chat_on_both(devices, "warm up")
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=["Once upon", " a time"], release_after=1, release=release))
    await send(a, "a story")
    for page in (a, b):
        await expect(last_answer(page).locator(".body")).to_have_text("Once upon")
    await a.locator("#stop").click()
    for page in (a, b):
        await expect(last_answer(page)).to_have_attribute("data-status", "cancelled")
    release.set()  # the stopped stream ends unread
    answer_id = await last_answer(a).get_attribute("data-id")
    env.fake.enqueue(Script(chunks=[" there was", " a cat."]))
    await action(turn(b, "assistant"), "continue").click()
    for page in (a, b):
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-status", "complete")
        await expect(answer).to_have_attribute("data-text", "Once upon there was a cat.")
        await expect(answer).to_have_attribute("data-id", answer_id or "")
        await expect(page.locator("article.msg.assistant")).to_have_count(2)
        await expect(page.locator('[data-action="continue"]:visible')).to_have_count(0)
    data = await rest(env, "GET", f"/api/conversations/{conv}/messages")
    last = data["messages"][-1]
    assert (last["id"], last["content"], last["status"]) == (
        answer_id,
        "Once upon there was a cat.",
        "complete",
    )
