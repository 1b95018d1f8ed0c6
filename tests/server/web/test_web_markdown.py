"""An answer's Markdown in the web page (``server/web/app/markdown.js``) in a real browser.

markdown-it and highlight.js, vendored under ``/app/vendor/``, render headings, lists,
tables and highlighted code under the page's strict CSP (no console error); a ``` in the
middle of a line hides nothing (issue 25); an unterminated fence streams as code; a long
answer streamed from the demo model redraws only its last block and ends equal to a full
render of the stored text; the Copy buttons of a code block and of a message put the
code / the raw Markdown on the clipboard; model text cannot make a ``javascript:`` link,
an image or any element of its own. Answers come from the Gemini stand-in (exact texts,
held mid-answer with ``Script.release``) or the demo model; set-up as in
``test_web_app.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from actors.models.demo import MARKDOWN_SHOWCASE
from server.auth.local import issue_link
from server.auth.sessions import SESSIONS
from server.core.app_keys import REGISTRY
from standins.gemini import Script
from tests.conftest import IN_CI
from tests.server.web.test_web_app import (
    Env,
    browser_env,
    conversation_of,
    last_answer,
    new_context,
    rest,
    send,
    shot,
    watched,
)

try:
    from playwright.async_api import BrowserContext, Page, expect
except ImportError:  # pragma: no cover - the dev dependencies include playwright
    if IN_CI:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# A full render of `text` by the page's own module, in a detached element.
FULL_RENDER = """async (text) => {
  const { renderMarkdown } = await import("/app/markdown.js");
  const box = document.createElement("div");
  renderMarkdown(box, text);
  return box.innerHTML;
}"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with browser_env(tmp_path_factory, "markdown") as running:
        yield running


@dataclass
class Signed:
    page: Page
    context: BrowserContext
    errors: list[str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def signed(env: Env) -> AsyncIterator[Signed]:
    """One page signed in with the local sign-in link, allowed the clipboard."""
    context = await new_context(env)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=env.live.url)
    page, errors = await watched(context)
    await page.goto(f"/auth/local?token={await issue_link(60)}")
    await expect(page.locator("#who")).to_have_text("Local user")
    session = await page.evaluate("fetch('/api/auth/get-session').then((r) => r.json())")
    env.user_id = session["user"]["id"]
    env.token, _ = await env.live.app[SESSIONS].start(env.user_id, user_agent="tests")
    await expect(page.locator("#conn")).to_have_text("live")
    yield Signed(page=page, context=context, errors=errors)
    assert not errors, errors  # a CSP violation is a console error
    await context.close()


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def fresh_scripts(env: Env) -> AsyncIterator[None]:
    yield
    env.fake.scripts.clear()


async def ask(env: Env, page: Page, chunks: list[str], question: str) -> None:
    """A new chat whose answer is `chunks`, streamed to the end."""
    env.fake.enqueue(Script(chunks=list(chunks)))
    await page.locator("#new-chat").click()
    await send(page, question)
    await expect(last_answer(page)).to_have_attribute("data-status", "complete")
    await expect(last_answer(page)).to_have_attribute("data-text", "".join(chunks))


RICH = [
    "# Title\n\nSome **bold**, *italic* and `inline code`.\n\n## Lists\n\n",
    "1. one\n2. two\n   - nested a\n   - nested b\n\n- bullet\n- another\n\n",
    "### Table\n\n| Name | Count |\n| :--- | ----: |\n| apples | 3 |\n| pears | 12 |\n\n",
    "```python\ndef add(a, b):\n    return a + b  # sum\n```\n\n",
    "> quoted\n\n---\n\nThe end.",
]


async def test_headings_lists_tables_and_highlighted_code(env: Env, signed: Signed) -> None:
    page = signed.page
    await ask(env, page, RICH, "show me everything")
    body = last_answer(page).locator(".body")
    await expect(body.locator("h1")).to_have_text("Title")
    await expect(body.locator("h2")).to_have_text("Lists")
    await expect(body.locator("h3")).to_have_text("Table")
    await expect(body.locator("strong")).to_have_text("bold")
    await expect(body.locator("em")).to_have_text("italic")
    await expect(body.locator("p > code")).to_have_text("inline code")
    await expect(body.locator("ol > li")).to_have_count(2)
    await expect(body.locator("ol ul > li")).to_have_text(["nested a", "nested b"])
    await expect(body.locator(":scope > ul > li")).to_have_text(["bullet", "another"])
    await expect(body.locator("table th")).to_have_text(["Name", "Count"])
    await expect(body.locator("table tbody tr")).to_have_count(2)
    # Column alignment is a class: the CSP allows no style attribute.
    await expect(body.locator("td.align-right")).to_have_text(["3", "12"])
    assert await body.locator("[style]").count() == 0
    await expect(body.locator("blockquote")).to_have_text("quoted")
    await expect(body.locator("hr")).to_have_count(1)
    block = body.locator(".code-block")
    await expect(block).to_have_attribute("data-lang", "python")
    code = block.locator("pre > code.hljs.language-python")
    await expect(code).to_have_text("def add(a, b):\n    return a + b  # sum\n")
    await expect(code.locator(".hljs-keyword").first).to_have_text("def")
    await expect(code.locator(".hljs-comment")).to_have_text("# sum")
    # The theme colours it (highlight.js's GitHub theme, light here).
    color = await code.locator(".hljs-keyword").first.evaluate("(e) => getComputedStyle(e).color")
    assert color == "rgb(215, 58, 73)", color
    await shot(page, "markdown")
    await page.emulate_media(color_scheme="dark")  # and the dark one in a dark scheme
    try:
        color = await code.locator(".hljs-keyword").first.evaluate(
            "(e) => getComputedStyle(e).color"
        )
        assert color == "rgb(255, 123, 114)", color
        await shot(page, "markdown-dark")
    finally:
        await page.emulate_media(color_scheme="light")


async def test_backticks_mid_line_hide_nothing(env: Env, signed: Signed) -> None:
    """Issue 25: a ``` in the middle of a line used to open a code block that swallowed
    the rest of the answer."""
    page = signed.page
    chunks = [
        "Type ``` to start",
        " a fence, then the rest",
        " of this line.\n\n",
        "More text after.",
    ]
    await ask(env, page, chunks, "how do fences work")
    body = last_answer(page).locator(".body")
    await expect(body).to_contain_text("then the rest of this line.")
    await expect(body).to_contain_text("More text after.")
    await expect(body.locator("pre")).to_have_count(0)
    text = await body.text_content()
    assert text is not None and "```" in text


async def test_an_unterminated_fence_streams_as_code(env: Env, signed: Signed) -> None:
    page = signed.page
    release = asyncio.Event()
    chunks = ["Here:\n\n```js\n", "const x = 1;\n", "let y", " = 2;\n```\n\nDone."]
    env.fake.enqueue(Script(chunks=list(chunks), release_after=3, release=release))
    await page.locator("#new-chat").click()
    await send(page, "some code please")
    body = last_answer(page).locator(".body")
    code = body.locator("pre code")
    await expect(code).to_have_text("const x = 1;\nlet y")
    await expect(code.locator(".hljs-keyword").first).to_have_text("const")
    await expect(body.locator("p")).to_have_text(["Here:"])
    release.set()
    await expect(last_answer(page)).to_have_attribute("data-status", "complete")
    await expect(code).to_have_text("const x = 1;\nlet y = 2;\n")
    await expect(body.locator("p")).to_have_text(["Here:", "Done."])


# Which nodes the answer's body ever had removed while it streamed, and its first block.
WATCH_BLOCKS = """() => {
  window.__removed = [];
  window.__first = null;
  new MutationObserver((records) => {
    for (const r of records) {
      if (!r.target.matches || !r.target.matches("article.msg.assistant .body")) continue;
      // The first block, once a second one follows it (before, it is the one growing).
      const blocks = r.target.children;
      if (!window.__first && blocks.length > 1) window.__first = blocks[0];
      for (const node of r.removedNodes) window.__removed.push(node.textContent);
    }
  }).observe(document.getElementById("messages"), { subtree: true, childList: true });
}"""


async def test_a_long_demo_answer_streams_block_by_block_and_ends_as_stored(
    env: Env, signed: Signed
) -> None:
    page = signed.page
    env.live.app[REGISTRY].deps.providers["demo"].token_delay = 0.01  # type: ignore[attr-defined]
    await page.locator("#new-chat").click()
    gemini = await page.locator("#model").input_value()
    await page.locator("#model").select_option("demo")
    try:
        await demo_answer_streams(env, page)
    finally:
        await page.locator("#model").select_option(gemini)  # the next tests' answers


async def demo_answer_streams(env: Env, page: Page) -> None:
    await page.evaluate(WATCH_BLOCKS)
    await send(page, "Show me some Markdown")
    answer = last_answer(page)
    await expect(answer).to_have_attribute("data-status", "complete", timeout=30_000)
    await expect(answer).to_have_attribute("data-text", MARKDOWN_SHOWCASE)
    stored = await rest(env, "GET", f"/api/conversations/{conversation_of(page)}/messages")
    assert stored["messages"][-1]["content"] == MARKDOWN_SHOWCASE
    body = answer.locator(".body")
    # Only the last block was ever redrawn: the heading, first drawn, is still the same node.
    assert await page.evaluate(
        "() => window.__first !== null && window.__first.isConnected"
        " && window.__first.textContent === 'Markdown, rendered'"
    )
    removed: list[str] = await page.evaluate("window.__removed")
    assert len(removed) > 5, removed  # it did stream in pieces
    # The end is a full render of the stored text, node for node.
    html = await body.inner_html()
    assert html == await page.evaluate(FULL_RENDER, MARKDOWN_SHOWCASE)
    await expect(body.locator("h2")).to_have_text("Markdown, rendered")
    await expect(body.locator("ol > li")).to_have_count(2)
    await expect(body.locator("table td.align-right")).to_have_text(["1 ms", "2 ms"])
    await expect(body.locator("pre code .hljs-keyword").first).to_have_text("def")
    await expect(body).to_contain_text("which starts no code block.")
    await expect(body).to_contain_text("or the whole answer with Copy.")
    # Reloaded, the stored message renders the same.
    await page.reload()
    await expect(last_answer(page)).to_have_attribute("data-status", "complete")
    assert await last_answer(page).locator(".body").inner_html() == html
    await shot(page, "markdown-demo")


# Every prefix of `text`, rendered `partial` into one element as a stream would (each from
# the one before), against a full render of the same prefix in a fresh one: the prefixes
# whose HTML differs.
EVERY_PREFIX = """async ([text, step]) => {
  const { renderMarkdown } = await import("/app/markdown.js");
  const live = document.createElement("div");
  const differ = [];
  for (let end = 0; end <= text.length + step; end += step) {
    const prefix = text.slice(0, end);
    renderMarkdown(live, prefix, true);
    const fresh = document.createElement("div");
    renderMarkdown(fresh, prefix);
    if (live.innerHTML !== fresh.innerHTML) differ.push(prefix);
  }
  renderMarkdown(live, text);
  return differ;
}"""

STREAMED = [
    MARKDOWN_SHOWCASE,
    "".join(RICH),
    "Intro paragraph\nwith a second line\n===\n\npara | one\n| --- |\n| cell |\n\n"
    "- a\n\n  still a\n- b\n\n    indented code\n\n[ref link][r] and `code` end\n\n"
    "[r]: https://example.com/ref\n\n```\nno language\n",
]


@pytest.mark.parametrize("text", STREAMED, ids=["showcase", "rich", "tricky"])
async def test_rendering_as_it_streams_equals_a_full_render_at_every_step(
    signed: Signed, text: str
) -> None:
    for step in (1, 5):
        differ = await signed.page.evaluate(EVERY_PREFIX, [text, step])
        assert differ == [], differ[:3]


async def test_copy_buttons_on_code_and_on_messages(env: Env, signed: Signed) -> None:
    page = signed.page
    chunks = ["Run this:\n\n```bash\necho 'hi' && ls -l\n```\n\nand ", "**that** is all."]
    await ask(env, page, chunks, "a shell line")
    answer = last_answer(page)
    copy = answer.locator(".code-block .code-copy")
    await expect(copy).to_have_attribute("aria-label", "Copy bash code")
    await copy.focus()  # a real button: the keyboard reaches and presses it
    await page.keyboard.press("Enter")
    await expect(copy).to_have_attribute("data-copied", "true")
    assert await page.evaluate("navigator.clipboard.readText()") == "echo 'hi' && ls -l"
    label = await copy.evaluate("(e) => getComputedStyle(e, '::before').content")
    assert label == '"Copied"', label
    # The answer's own Copy gives its Markdown source, fences and stars included.
    await answer.locator("xpath=..").locator('[data-action="copy"]').click()
    assert await page.evaluate("navigator.clipboard.readText()") == "".join(chunks)
    # And a message of yours has one too.
    mine = page.locator("#messages > .turn.user").last.locator('[data-action="copy"]')
    await expect(mine).to_have_attribute("aria-label", "Copy message")
    await mine.click()
    await expect(mine).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "a shell line"


async def test_model_text_makes_no_link_image_or_element_of_its_own(
    env: Env, signed: Signed
) -> None:
    page = signed.page
    chunks = [
        "[run](javascript:window.__pwned=1) <javascript:window.__pwned=2> ",
        "[data](data:text/html,<script>window.__pwned=3</script>) [rel](/api/auth/sign-out) ",
        '<b onclick="window.__pwned=4">raw html</b> <script>window.__pwned=5</script>\n\n',
        "![pic](https://example.com/x.png) [safe](https://example.com/a) ",
        "[mail](mailto:someone@example.com) https://example.com/bare\n\n",
        "<div>block html</div>",
    ]
    await ask(env, page, chunks, "try to break out")
    body = last_answer(page).locator(".body")
    hrefs = await body.locator("a").evaluate_all("(links) => links.map((a) => a.href)")
    assert hrefs == [
        "https://example.com/x.png",  # an image is only a link to it: nothing loads
        "https://example.com/a",
        "mailto:someone@example.com",
        "https://example.com/bare",
    ], hrefs
    for link in await body.locator("a").all():
        await expect(link).to_have_attribute("target", "_blank")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
    # The markup is shown as text, escaped; nothing of it became an element.
    await expect(body).to_contain_text('<b onclick="window.__pwned=4">raw html</b>')
    await expect(body).to_contain_text("<script>window.__pwned=5</script>")
    await expect(body).to_contain_text("<div>block html</div>")
    await expect(body).to_contain_text("[run](javascript:window.__pwned=1)")
    for tag in ["b", "script", "img", "div", "iframe"]:
        assert await body.locator(tag).count() == 0, tag
    assert await page.evaluate("window.__pwned") is None
