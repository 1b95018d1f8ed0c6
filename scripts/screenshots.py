"""Reproduce the README's screenshots (docs/web-chat.png, docs/web-chat-phone.png) from
``make demo``: the demo launcher (:mod:`standins.demo`) on a free port and a fresh SQLite
file, Debian's Chromium driven by Playwright (headless; no browser download).

    .venv/bin/python scripts/screenshots.py [--out docs] [--chromium /usr/bin/chromium]

What it does, as a newcomer would: open the printed sign-in link on a desktop-sized page
(1200x800), tick "google search" and "code execution", ask a question and wait for the
answer (tool steps, code and its output, sources); then a second browser at phone width
(390x844), signed in with a link from ``cero-api sign-in-link``, opens the same
conversation. Each page is saved as a PNG in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from playwright.async_api import ViewportSize, async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How do prime numbers work?"
DESKTOP = ViewportSize(width=1200, height=800)
PHONE = ViewportSize(width=390, height=844)
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def demo(port: int, database_url: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m standins.demo`` in the background, stopped (SIGTERM) at the end."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CERO_", "BETTER_AUTH_", "DATABASE_URL", "GEMINI_", "GOOGLE_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - a fixed argv: this interpreter, our module
            [
                sys.executable,
                "-m",
                "standins.demo",
                "--port",
                str(port),
                "--database",
                database_url,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_link(log_path: Path, proc: subprocess.Popen[bytes], within: float = 60.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = re.search(r"^Sign in: (\S+)$", log_path.read_text(errors="replace"), re.M)
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"the demo printed no sign-in link; its log:\n{log_path.read_text()[-3000:]}")


def _new_link(port: int, database_url: str) -> str:
    """A second link for a second browser: ``cero-api sign-in-link``, as the docs say."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "DATABASE_URL"))}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=database_url)
    out = subprocess.run(  # noqa: S603 - a fixed argv: this interpreter, our module
        [sys.executable, "-m", "server.cli", "sign-in-link", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def shoot(link: str, port: int, database_url: str, out: Path, chromium: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        desktop = await browser.new_context(viewport=DESKTOP, color_scheme="light")
        page = await desktop.new_page()
        await page.goto(link)
        await expect(page.locator("#who")).to_have_text("Local user", timeout=20_000)
        await page.locator("#new-chat").click()
        await page.locator("#tool-google_search").check()
        await page.locator("#tool-code_execution").check()
        await page.locator("#input").fill(QUESTION)
        await page.locator("#input").press("Enter")
        answer = page.locator("article.msg.assistant").last
        await expect(answer).to_have_attribute("data-status", "complete", timeout=30_000)
        conversation = page.url.partition("#")[2]

        phone_ctx = await browser.new_context(
            viewport=PHONE, color_scheme="light", has_touch=True, is_mobile=True
        )
        phone = await phone_ctx.new_page()
        await phone.goto(_new_link(port, database_url))
        await expect(phone.locator("#who")).to_have_text("Local user", timeout=20_000)
        await phone.goto(f"http://127.0.0.1:{port}/app#{conversation}")
        await expect(phone.locator("article.msg.assistant").last).to_have_attribute(
            "data-status", "complete", timeout=20_000
        )
        await page.screenshot(path=str(out / "web-chat.png"))
        await phone.screenshot(path=str(out / "web-chat-phone.png"))
        await browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument(
        "--chromium", default=os.environ.get("CERO_TEST_CHROMIUM", "/usr/bin/chromium")
    )
    args = parser.parse_args()
    port = _free_port()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cero-screenshots-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        log_path = Path(tmp) / "demo.log"
        with demo(port, database_url, log_path) as proc:
            link = _wait_for_link(log_path, proc)
            asyncio.run(shoot(link, port, database_url, args.out, args.chromium))
    sys.stdout.write(f"saved {args.out / 'web-chat.png'} and {args.out / 'web-chat-phone.png'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
