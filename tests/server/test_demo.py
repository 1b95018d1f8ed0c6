"""``make demo`` (issue 25): ``python -m standins.demo`` starts the Gemini stand-in in demo
mode and ``cero-api serve`` wired to it; a newcomer signs in with the printed link and
sees tool steps, code execution and citations. Run as a newcomer would: the launcher as a
subprocess, the server talking to the stand-in through the google-genai SDK (both of the
server's decoders)."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from tests.conftest import IN_CI
from tests.live_clients import chat
from tests.server_process import ROOT, run_server, server_env

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


def _link(server_log: str) -> str:
    found = re.search(r"^Sign in: (\S+)$", server_log, flags=re.MULTILINE)
    assert found, server_log[-2000:]
    return found.group(1)


@pytest.mark.parametrize("decoder", ["wire", "sdk"])
async def test_demo_shows_tool_steps_code_and_citations(tmp_path: Path, decoder: str) -> None:
    port = unused_port()
    env = server_env(
        port,
        None,
        {"BETTER_AUTH_SECRET": None, "CERO_PORT": None, "CERO_GEMINI_DECODER": decoder},
    )
    command = [
        sys.executable,
        "-m",
        "standins.demo",
        "--port",
        str(port),
        "--database",
        f"sqlite:///{tmp_path / 'demo.db'}",
    ]
    async with run_server(command, port=port, env=env, cwd=tmp_path) as server:
        for _ in range(100):  # the link is printed once the server listens
            if "Sign in: " in server.log():
                break
            await asyncio.sleep(0.05)
        link = _link(server.log())
        assert "cero-api sign-in-link" in server.log()  # how to get another one
        async with aiohttp.ClientSession() as http:
            parts = urlsplit(link)
            async with http.get(
                f"{server.url}{parts.path}?{parts.query}", allow_redirects=False
            ) as resp:
                assert resp.status == 302
                token = resp.headers["set-auth-token"]
            async with http.get(server.url + "/api/models") as resp:
                models = await resp.json()
            assert models["geminiConfigured"] is True
            default = next(m for m in models["models"] if m["default"])
            assert {"google_search", "code_execution"} <= set(default["tools"])

            question = "How do prime numbers work? See https://example.org/primes"
            lines = await chat(
                http,
                server.url,
                token,
                message=question,
                tools=["google_search", "code_execution", "url_context"],
            )
            topics = [line["topic"] for line in lines]
            assert topics[0] == "init" and topics[-1] == "done", topics
            assert lines[0]["data"]["aiModel"] == default["id"]
            steps = [line["data"] for line in lines if line["topic"] == "tool"]
            by_tool = {step["tool"]: step["payload"] for step in steps}
            # The search queries come first, before any text.
            assert steps[0]["tool"] == "google_search"
            assert topics.index("tool") < topics.index("token")
            assert by_tool["google_search"]["queries"][0].startswith("How do prime numbers")
            assert "print(" in by_tool["code_execution"]["code"]
            result = by_tool["code_execution_result"]
            assert result["outcome"] == "OUTCOME_OK"
            assert result["output"].startswith("7 words, ")
            assert by_tool["url_context"]["urls"] == [
                {"url": "https://example.org/primes", "status": "URL_RETRIEVAL_STATUS_SUCCESS"}
            ]
            done = lines[-1]["data"]
            assert len(done["citations"]) == 3
            assert all(c["uri"].startswith("https://") and c["title"] for c in done["citations"])
            assert "local Gemini stand-in" in done["fullText"]
            # Stored as shown: a page that opens the conversation later sees the same.
            conversation = lines[0]["data"]["conversationId"]
            async with http.get(
                f"{server.url}/api/conversations/{conversation}/messages",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                stored = (await resp.json())["messages"][-1]
            assert stored["citations"] == done["citations"]
            assert [t["tool"] for t in stored["tools"]] == [s["tool"] for s in steps]
            # Without tools: a plain Markdown answer that says where the tools are.
            plain = await chat(http, server.url, token, message="hello")
            assert "google search" in plain[-1]["data"]["fullText"]
            assert not [line for line in plain if line["topic"] == "tool"]
    stopped = server.exit
    assert stopped is not None and stopped.code == 0 and not stopped.killed, server.log()[-2000:]


async def test_screenshots_script_reproduces_the_readme_images(tmp_path: Path) -> None:
    """``scripts/screenshots.py`` (the README's way to remake docs/web-chat*.png) runs the
    demo and writes both images, at the documented sizes."""
    chromium = os.environ.get("CERO_TEST_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        if IN_CI:
            pytest.fail(f"Chromium not found at {chromium} (CI=true: must not skip)")
        pytest.skip(f"Chromium not found at {chromium}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "DATABASE_URL"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "screenshots.py"),
        "--out",
        str(tmp_path),
        "--chromium",
        chromium,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    for name, width, height in (("web-chat", 1200, 800), ("web-chat-phone", 390, 844)):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (width, height)
