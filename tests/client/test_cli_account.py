"""``cero watch --account`` against a live server (issue 24): one line per account event,
resuming with the last cursor after a drop (through a TCP proxy the test cuts), a notice
on ``reset``, and a clean exit on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from client.credentials import CredentialStore
from tests.client.cli_harness import (
    WAIT,
    Cli,
    Proxy,
    messages,
    rest,
    signed_in,
    terminal,
)
from tests.conftest import Live
from tests.live_clients import chat

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli-account') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"demo_token_delay": 0.01}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def next_line(stream: asyncio.StreamReader, startswith: str) -> str:
    """The next stdout line starting with ``startswith`` (others are skipped)."""
    while True:
        raw = await asyncio.wait_for(stream.readline(), WAIT)
        assert raw, f"EOF before a line starting with {startswith!r}"
        line = raw.decode().rstrip("\n")
        if line.startswith(startswith):
            return line


async def line_equal(stream: asyncio.StreamReader, expected: str) -> None:
    """Read stdout until the line ``expected`` (a generated title may rename first)."""
    seen: list[str] = []
    while True:
        raw = await asyncio.wait_for(stream.readline(), WAIT)
        assert raw, f"EOF before {expected!r}; got {seen}"
        seen.append(raw.decode().rstrip("\n"))
        if seen[-1] == expected:
            return


async def subscribed(live: Live, token: str, stdout: asyncio.StreamReader) -> str:
    """Rename a conversation until the watch prints it: from then on it is subscribed.
    The conversation's id is returned."""
    await chat_turn(live, token, "a conversation to rename")
    _, page = await rest(live, token, "GET", "/api/conversations")
    conversation = str(page["conversations"][0]["id"])
    for attempt in range(50):
        title = f"ping {attempt}"
        status, _ = await rest(
            live, token, "PATCH", f"/api/conversations/{conversation}", json={"shortTitle": title}
        )
        assert status == 200
        try:
            line = await asyncio.wait_for(stdout.readline(), 0.5)
        except TimeoutError:
            continue
        # An earlier ping's line: read on (a line or a JSON event, --json).
        while not any(f"{title}{q}" in line.decode() for q in '”"'):
            line = await asyncio.wait_for(stdout.readline(), WAIT)
        return conversation
    raise AssertionError("the account watch printed nothing")


async def chat_turn(live: Live, token: str, text: str, **body: Any) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        return await chat(http, live.url, token, message=text, **body)


async def test_watch_account_prints_one_line_per_event_and_stops_on_ctrl_c(
    cli: Cli, live: Live
) -> None:
    token = await signed_in(cli)
    watch = await cli.start("watch", "--account")
    assert watch.stdout is not None and watch.stderr is not None
    await subscribed(live, token, watch.stdout)

    lines = await chat_turn(live, token, "plan a trip to Lisbon")
    conversation = lines[0]["data"]["conversationId"]
    created = await next_line(watch.stdout, "created")
    assert created == f"created  {conversation}  “plan a trip to Lisbon”"
    assert await next_line(watch.stdout, "answer started") == (
        f"answer started  {conversation}  “plan a trip to Lisbon”"
    )
    ended = await next_line(watch.stdout, "answer ended")
    assert ended.startswith(f"answer ended  {conversation}  “") and ended.endswith("  complete")

    code, _, err = await cli.run("rename", conversation, "Lisbon", "trip")
    assert code == 0, err
    await line_equal(watch.stdout, f"renamed  {conversation}  “Lisbon trip”")
    code, _, err = await cli.run("delete", conversation, "--yes")
    assert code == 0, err
    assert await next_line(watch.stdout, "deleted") == f"deleted  {conversation}"

    watch.send_signal(signal.SIGINT)
    _, err_bytes = await asyncio.wait_for(watch.communicate(), WAIT)
    assert watch.returncode == 0, err_bytes  # stopping a watch is how it ends
    assert b"Traceback" not in err_bytes and b"cero: " not in err_bytes


async def test_watch_account_resumes_with_the_last_cursor_and_says_reset(
    cli: Cli, live: Live
) -> None:
    token = await signed_in(cli)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})
    try:
        watch = await cli.start("watch", "--account", CERO_API_URL=via)
        assert watch.stdout is not None and watch.stderr is not None
        conversation = await subscribed(live, token, watch.stdout)
        path = f"/api/conversations/{conversation}"

        proxy.drop()  # the watch reconnects after the server's `retry` (2 s)
        status, _ = await rest(live, token, "PATCH", path, json={"shortTitle": "while away"})
        assert status == 200
        # Replayed from the cursor on the resumed stream: not missed, not printed twice.
        await line_equal(watch.stdout, f"renamed  {conversation}  “while away”")
        resumed = [h for h in proxy.heads if h.startswith(b"GET /api/account/events")]
        assert len(resumed) == 2 and b"last-event-id: " in resumed[1].lower(), proxy.heads

        proxy.garble = True  # the next resume's cursor cannot be replayed: `reset`
        proxy.drop()
        seen = b""
        while b"missed account events" not in seen:
            line = await asyncio.wait_for(watch.stderr.readline(), WAIT)
            assert line, seen
            seen += line
        assert b"connection lost" in seen
        status, _ = await rest(live, token, "PATCH", path, json={"shortTitle": "after reset"})
        assert status == 200
        await line_equal(watch.stdout, f"renamed  {conversation}  “after reset”")
        watch.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(watch.communicate(), WAIT)
        assert watch.returncode == 0, err
    finally:
        await proxy.close()


async def test_watch_account_json_and_usage(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    watch = await cli.start("watch", "--account", "--json")
    assert watch.stdout is not None
    await subscribed(live, token, watch.stdout)
    await chat_turn(live, token, "json events")
    kinds: list[str] = []
    while "answer.ended" not in kinds:
        event = orjson.loads(await asyncio.wait_for(watch.stdout.readline(), WAIT))
        assert event["channel"] == "account"
        kinds.append(event["type"])
    assert kinds[:2] == ["conversation.created", "answer.started"], kinds
    watch.send_signal(signal.SIGINT)
    await asyncio.wait_for(watch.wait(), WAIT)
    code, _, err = await cli.run("watch")
    assert code == 2 and "--account" in err
    _, page = await rest(live, token, "GET", "/api/conversations")
    conversation = str(page["conversations"][0]["id"])
    code, _, err = await cli.run("watch", conversation, "--account")
    assert code == 2 and "one of the two" in err
    assert await messages(live, token, conversation)
