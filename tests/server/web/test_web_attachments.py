"""Attachments in the page (issue 26) in a real browser.

Files come through the Attach button (a real file chooser), dropped on the composer (a
``DataTransfer`` with a ``File``, dispatched as the browser would) and pasted into the
message box (a ``ClipboardEvent``); each is a chip with its name, size, an image preview
(an object URL: the CSP's ``img-src`` allows ``blob:``), its progress and Remove. A file
over the limit (this app allows 4 KiB a file) says the limit in plain words, one of a
type not accepted says which are. A send with an image and a text file: the demo model's
answer names both, the sent message shows the image's thumbnail and a link to the text
file, and another device of the user sees them on the live message. The phone layout
keeps its 44 px targets and no horizontal scroll with chips shown, and axe-core finds no
serious violation. Set up as in ``test_web_app.py``, whose helpers this module uses.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from server.auth.local import issue_link
from server.auth.sessions import SESSIONS
from tests.conftest import IN_CI
from tests.server.web.test_web_app import (
    Devices,
    Env,
    browser_env,
    last_answer,
    new_context,
    shot,
    signed_in_context,
    watched,
)
from tests.server.web.test_web_ux import AXE, axe, phone_context

try:
    from playwright.async_api import FilePayload, Page, Route, WebSocketRoute, expect
except ImportError:  # pragma: no cover - the dev dependencies include playwright
    if IN_CI:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 4096  # CERO_ATTACHMENT_MAX_BYTES of this module's app


def png_bytes() -> bytes:
    image = Image.new("RGB", (64, 48), (58, 91, 217))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


PNG = png_bytes()
NOTES = b"# Notes\n\nThree things to remember.\n"


def image_file(name: str = "chart.png") -> FilePayload:
    return {"name": name, "mimeType": "image/png", "buffer": PNG}


def text_file(name: str = "notes.md") -> FilePayload:
    return {"name": name, "mimeType": "text/markdown", "buffer": NOTES}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with browser_env(tmp_path_factory, "attach", attachment_max_bytes=LIMIT) as running:
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


def chip(page: Page, name: str) -> Any:
    return page.locator("#attachments .chip").filter(has_text=name)


async def clear_chips(page: Page) -> None:
    for _ in range(await page.locator("#attachments .chip").count()):
        await page.locator("#attachments .chip-remove").first.click()
    await expect(page.locator("#attachments")).to_be_hidden()


DROP = """([name, type, text, kind]) => {
    const data = new DataTransfer();
    data.items.add(new File([text], name, { type }));
    const target = document.querySelector(
        kind === 'paste' ? '#input' : kind === 'beside' ? '#messages' : '#composer');
    if (kind === 'beside') {
        const drop = new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true });
        target.dispatchEvent(drop);
        return drop.defaultPrevented;
    }
    if (kind === 'paste') {
        target.dispatchEvent(new ClipboardEvent('paste', {
            clipboardData: data, bubbles: true, cancelable: true }));
        return;
    }
    for (const type of kind === 'enter' ? ['dragenter', 'dragover'] : ['drop']) {
        target.dispatchEvent(new DragEvent(type, {
            dataTransfer: data, bubbles: true, cancelable: true }));
    }
}"""


async def test_the_attach_button_uploads_a_chip_and_remove_takes_it_away(
    env: Env, devices: Devices
) -> None:
    a = devices.a
    await a.locator("#new-chat").click()
    attach = a.get_by_role("button", name="Attach files")
    await expect(attach).to_be_visible()
    async with a.expect_file_chooser() as chooser:
        await attach.focus()
        await a.keyboard.press("Enter")  # a real button: the keyboard opens the chooser
    await (await chooser.value).set_files([image_file(), text_file()])
    image, notes = chip(a, "chart.png"), chip(a, "notes.md")
    await expect(image).to_have_attribute("data-status", "done")
    await expect(notes).to_have_attribute("data-status", "done")
    await expect(image.locator(".chip-size")).to_have_text(f"{len(PNG)} bytes")
    preview = image.locator("img.chip-preview")
    assert (await preview.get_attribute("src") or "").startswith("blob:")
    assert await preview.evaluate("(img) => img.decode().then(() => img.naturalWidth)") == 64
    await expect(image.locator("progress")).to_be_hidden()
    await shot(a, "attach-chips")

    await a.get_by_role("button", name="Remove chart.png").click()
    await expect(image).to_have_count(0)
    await expect(a.get_by_role("button", name="Remove notes.md")).to_be_focused()
    await expect(a.locator("#attach-status")).to_have_text("chart.png removed.")
    await a.get_by_role("button", name="Remove notes.md").press("Enter")
    await expect(a.locator("#attachments")).to_be_hidden()
    await expect(a.locator("#input")).to_be_focused()


async def test_a_file_dropped_on_the_composer_or_pasted_is_attached(
    env: Env, devices: Devices
) -> None:
    a = devices.a
    await a.locator("#new-chat").click()
    await a.evaluate(DROP, ["dropped.txt", "text/plain", "dropped text\n", "enter"])
    await expect(a.locator("#composer")).to_have_class("composer dropping")
    await shot(a, "attach-drop-zone")
    await a.evaluate(DROP, ["dropped.txt", "text/plain", "dropped text\n", "drop"])
    await expect(a.locator("#composer")).to_have_class("composer")
    await expect(chip(a, "dropped.txt")).to_have_attribute("data-status", "done")
    # Dropped beside the composer: not attached, and not opened in the page's place.
    assert await a.evaluate(DROP, ["beside.txt", "text/plain", "beside\n", "beside"]) is True
    await expect(chip(a, "beside.txt")).to_have_count(0)

    await a.locator("#input").fill("kept as typed")
    await a.evaluate(DROP, ["pasted.txt", "text/plain", "pasted text\n", "paste"])
    await expect(chip(a, "pasted.txt")).to_have_attribute("data-status", "done")
    await expect(a.locator("#input")).to_have_value("kept as typed")  # the file only
    await a.locator("#input").fill("")
    await clear_chips(a)


async def test_too_large_or_unaccepted_files_say_why_on_their_chip(
    env: Env, devices: Devices
) -> None:
    a = devices.a
    await a.locator("#new-chat").click()
    big_file: FilePayload = {
        "name": "big.txt",
        "mimeType": "text/plain",
        "buffer": b"x" * (LIMIT + 500),
    }
    # Not UTF-8, no known signature, whatever its declared type says.
    binary: FilePayload = {
        "name": "blob.bin",
        "mimeType": "image/png",
        "buffer": bytes(range(256)) * 4,
    }
    await a.locator("#file-input").set_input_files([big_file, binary])
    big, blob = chip(a, "big.txt"), chip(a, "blob.bin")
    await expect(big).to_have_attribute("data-status", "error")
    await expect(big.locator(".chip-error")).to_have_text("Too large: files can be at most 4 KB.")
    await expect(blob).to_have_attribute("data-status", "error")
    await expect(blob.locator(".chip-error")).to_contain_text(
        "This kind of file is not accepted. Accepted: PNG, JPEG, WebP, GIF, PDF"
    )
    await expect(blob.locator(".chip-icon")).to_have_text("BIN")  # no broken preview
    await shot(a, "attach-errors")
    # A send waits until the failed files are removed.
    await a.locator("#input").fill("with a broken file")
    await a.locator("#send").click()
    await expect(a.locator("#notice-text")).to_contain_text("could not be uploaded")
    await expect(a.locator("article.msg.user")).to_have_count(0)
    await clear_chips(a)
    await a.locator("#input").fill("")
    # Chromium logs each refused upload to the console: those two are expected.
    refused: list[str] = []
    for _ in range(50):  # the console's reports may come a little after the chips
        refused = [e for e in devices.errors if re.search(r"status of 41[35]\b", e)]
        if len(refused) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(refused) == 2, devices.errors
    for entry in refused:
        devices.errors.remove(entry)


async def test_a_send_with_an_image_and_a_text_file_shows_them_everywhere(
    env: Env, devices: Devices
) -> None:
    a, b = devices.a, devices.b
    await a.locator("#new-chat").click()
    await a.locator("#model").select_option("demo")
    # The uploads are held until Send was pressed: it waits for them, then sends.
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await a.route("**/api/attachments", hold)
    await a.locator("#file-input").set_input_files([image_file(), text_file()])
    await expect(a.locator("#attachments .chip[data-status=uploading]")).to_have_count(2)
    await expect(a.locator("#attachments progress").first).to_be_visible()
    await a.locator("#input").fill("What is in these?")
    await a.locator("#input").press("Enter")
    await expect(a.locator("#send")).to_have_text("Sending…")
    await expect(a.locator("article.msg.user")).to_have_count(0)
    release.set()
    await expect(a.locator("article.msg.user")).to_have_count(1)
    await expect(a.locator("#send")).to_have_text("Send")
    await a.unroute("**/api/attachments", hold)
    await expect(last_answer(a)).to_have_attribute("data-status", "complete")
    answer = last_answer(a).locator(".body")
    await expect(answer).to_contain_text("You attached 2 files:")
    await expect(answer).to_contain_text(f"chart.png (image/png, {len(PNG)} bytes)")
    await expect(answer).to_contain_text(f"notes.md (text/markdown, {len(NOTES)} bytes)")
    await expect(a.locator("#attachments")).to_be_hidden()  # the chips went with the send

    for page in (a, b):
        if page is b:
            await b.goto(a.url)  # device B opens the conversation; then a live send
        sent = page.locator("article.msg.user").last
        thumb = sent.get_by_role("img", name="chart.png")
        await expect(thumb).to_be_visible()
        assert "/thumbnail" in (await thumb.get_attribute("src") or "")
        width = await thumb.evaluate("(img) => img.decode().then(() => img.naturalWidth)")
        assert width == 64, width  # the thumbnail loaded (no larger than the image)
        link = sent.get_by_role("link", name="notes.md")
        await expect(link).to_contain_text(f"{len(NOTES)} bytes")
        assert await link.get_attribute("download") == "notes.md"
        href = await link.get_attribute("href")
        assert await page.evaluate("(u) => fetch(u).then((r) => r.text())", href) == NOTES.decode()

    # Live, on the other device: a second send with a file shows it there as it happens.
    await a.locator("#file-input").set_input_files([text_file("second.txt")])
    await a.locator("#input").fill("And this one?")
    await a.locator("#input").press("Enter")
    live = b.locator("article.msg.user").last
    await expect(live.get_by_role("link", name="second.txt")).to_be_visible()
    await expect(last_answer(b)).to_contain_text("second.txt (text/plain")
    await shot(b, "attach-other-device")
    await a.locator("#model").select_option(index=0)


async def test_a_refused_send_gives_its_files_back_unless_they_were_refused(
    env: Env, devices: Devices
) -> None:
    """A proxy on the socket refuses sends: a busy server (the text and the chips come
    back, Retry sends them), then the files themselves (said plainly; they do not)."""
    context = await signed_in_context(env)
    page, errors = await watched(context)
    refusals = [
        {"code": "overloaded", "error": "admission: queue full"},
        {
            "code": "invalid_request",
            "field": "attachments",
            "error": "attachments: no attachment 'x'",
        },
    ]
    sent: list[dict[str, Any]] = []

    def proxy(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "send":
                sent.append(frame)
                if len(sent) in (1, 3):
                    ws.send(json.dumps({"type": "fault", **refusals.pop(0)}))
                    return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(ws.send)

    await page.route_web_socket(re.compile(r"/api/ws$"), proxy)
    await page.goto("/app")
    await expect(page.locator("#conn")).to_have_text("live")
    await page.locator("#model").select_option("demo")
    await page.locator("#file-input").set_input_files([text_file("kept.md")])
    await expect(chip(page, "kept.md")).to_have_attribute("data-status", "done")
    await page.locator("#input").fill("with a file")
    await page.locator("#input").press("Enter")
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("The server is busy right now")
    await expect(page.locator("#input")).to_have_value("with a file")
    await expect(chip(page, "kept.md")).to_have_attribute("data-status", "done")
    await notice.get_by_role("button", name="Retry").click()
    await expect(last_answer(page)).to_contain_text("kept.md (text/markdown")
    assert sent[1]["attachments"] == sent[0]["attachments"]
    assert len(sent[0]["attachments"]) == 1

    await page.locator("#file-input").set_input_files([text_file("gone.md")])
    await expect(chip(page, "gone.md")).to_have_attribute("data-status", "done")
    await page.locator("#input").fill("and another")
    await page.locator("#input").press("Enter")
    await expect(notice).to_contain_text("A file of this message can no longer be sent")
    await expect(notice).not_to_contain_text("no attachment")
    await expect(page.locator("#input")).to_have_value("and another")
    await expect(page.locator("#attachments")).to_be_hidden()
    assert not errors, errors
    await context.close()


async def test_phone_layout_and_axe_with_attachments(env: Env, devices: Devices) -> None:
    if not AXE.exists():
        problem = f"axe-core not installed ({AXE}): cd tests/compat && npm ci"
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    conv = devices.a.url.partition("#")[2]
    phone = await phone_context(env, bypass_csp=True)  # axe is an injected script
    page, errors = await watched(phone)
    await page.goto(f"/app#{conv}")
    await expect(page.locator("article.msg.user .attachments").first).to_be_visible()
    await page.locator("#file-input").set_input_files(
        [image_file("a-very-long-name-for-a-small-screen-indeed.png"), text_file()]
    )
    await expect(page.locator("#attachments .chip[data-status=done]")).to_have_count(2)
    await shot(page, "attach-phone")
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    small = await page.evaluate(
        """() => Array.from(document.querySelectorAll(
              '#composer button, #attachments button, .msg .attachments a'))
            .filter((n) => n.offsetParent !== null)
            .map((n) => [n.getAttribute('aria-label') || n.textContent.trim().slice(0, 30),
                         n.getBoundingClientRect()])
            .filter(([, r]) => r.width < 44 || r.height < 44)
            .map(([name, r]) => `${name}: ${Math.round(r.width)}x${Math.round(r.height)}`)"""
    )
    assert not small, small
    found = await axe(page)
    assert not found, found
    assert not errors, errors
    await phone.close()
