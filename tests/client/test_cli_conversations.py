"""``cero rename``, ``cero delete`` (its question on a terminal, ``--yes`` otherwise) and
``cero watch ID``'s history, against a live server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from client.credentials import CredentialStore
from tests.client.cli_harness import (
    CERO,
    WAIT,
    Cli,
    Proxy,
    messages,
    only_conversation,
    read_until,
    rest,
    signed_in,
    terminal,
)
from tests.conftest import Live
from tests.live_clients import chat

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli-conversations') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"demo_token_delay": 0.01}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def title(live: Live, token: str, conversation: str) -> str | None:
    status, body = await rest(live, token, "GET", f"/api/conversations/{conversation}/messages")
    return str(body["conversation"]["shortTitle"]) if status == 200 else None


async def test_rename(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "to be renamed")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    code, out, err = await cli.run("rename", conversation, "Trip", "to", "Lisbon")
    assert code == 0 and out == "", err
    assert err == f"Renamed {conversation} to “Trip to Lisbon”.\n"
    assert await title(live, token, conversation) == "Trip to Lisbon"
    code, out, err = await cli.run("rename", conversation, "Again", "--json")
    assert code == 0 and orjson.loads(out)["conversation"]["shortTitle"] == "Again"
    code, _, err = await cli.run("rename", "no-such-conversation", "x")
    assert code == 1 and "(not_found)" in err


async def delete_on_a_terminal(cli: Cli, conversation: str, answer: bytes) -> tuple[int, str]:
    """``cero delete ID`` with a pseudo-terminal as stdin, answering ``answer``."""
    leader, follower = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(CERO),
            "delete",
            conversation,
            stdin=follower,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli.env(),
        )
        cli.procs.append(proc)
        assert proc.stderr is not None
        seen = bytearray()
        await read_until(proc.stderr, b"[y/N] ", seen)
        os.write(leader, answer)
        _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode is not None
    return proc.returncode, (seen + err).decode()


async def test_delete_asks_on_a_terminal_and_needs_yes_otherwise(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "delete me")
    assert code == 0, err
    conversation = await only_conversation(live, token)

    code, _, err = await cli.run("delete", conversation)  # stdin is a pipe: no one to ask
    assert code == 2 and "add --yes" in err
    assert await title(live, token, conversation) == "delete me"

    code, err = await delete_on_a_terminal(cli, conversation, b"n\n")
    assert code == 1 and f"Delete “delete me” ({conversation}, 2 messages)? [y/N] " in err
    assert "Not deleted." in err
    assert await title(live, token, conversation) == "delete me"

    code, err = await delete_on_a_terminal(cli, conversation, b"y\n")
    assert code == 0 and f"Deleted {conversation}." in err, err
    assert await title(live, token, conversation) is None

    code, _, err = await cli.run("chat", "delete me too")
    assert code == 0, err
    other = await only_conversation(live, token)
    code, _, err = await cli.run("delete", other, "--yes")
    assert code == 0 and err == f"Deleted {other}.\n"
    code, _, err = await cli.run("delete", other, "--yes")
    assert code == 1 and "(not_found)" in err


async def test_watch_prints_the_last_messages_then_live(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    for text in ("one", "two", "three"):
        code, _, err = await cli.run("chat", text, *(["-C"] if text != "one" else []))
        assert code == 0, err
    conversation = await only_conversation(live, token)
    stored = await messages(live, token, conversation)
    assert len(stored) == 6
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})
    try:
        watch = await cli.start("watch", conversation, "--history", "3", "--once", CERO_API_URL=via)
        assert watch.stdout is not None
        history = f"{stored[3]['content']}\n> three\n{stored[5]['content']}\n"
        seen = bytearray()
        await read_until(watch.stdout, history.encode(), seen)
        assert seen.decode() == history  # the last three messages, in order
        await proxy.next_answer(b"/messages")  # the history's
        await proxy.next_answer(b"/messages")  # subscribed, then looked for a late answer
        async with aiohttp.ClientSession() as http:
            await chat(http, live.url, token, message="four", conversationId=conversation)
        out, watch_err = await asyncio.wait_for(watch.communicate(), WAIT)
    finally:
        await proxy.close()
    assert watch.returncode == 0, watch_err
    answer = (await messages(live, token, conversation))[-1]["content"]
    assert (seen + out).decode() == f"{history}> four\n{answer}\n"
