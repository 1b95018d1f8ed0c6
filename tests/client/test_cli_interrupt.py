"""Ctrl-C and lost servers in ``cero chat``, against a live server (issue 25).

Ctrl-C cancels the answer on the server (``POST …/cancel`` with its ``generationId``) and
keeps the partial answer; a second Ctrl-C quits at once. A server that goes away
mid-answer (a TCP proxy cut and then refusing, as a killed server) is one line naming
``cero watch ID``, exit 4, no traceback.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from client.credentials import CredentialStore
from tests.client.cli_harness import (
    WAIT,
    Cli,
    Proxy,
    messages,
    one_error_line,
    only_conversation,
    read_until,
    signed_in,
    terminal,
)
from tests.conftest import Live

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli-interrupt') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """An answer of about three seconds: Ctrl-C lands mid-way."""
    return {"demo_token_delay": 0.1}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def test_ctrl_c_cancels_the_answer_and_keeps_the_partial_text(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proc = await cli.start("chat", "stop me half way")
    assert proc.stdout is not None
    seen = bytearray()
    await read_until(proc.stdout, b"This is", seen)
    proc.send_signal(signal.SIGINT)
    out, err_bytes = await asyncio.wait_for(proc.communicate(), WAIT)
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    conversation = await only_conversation(live, token)
    answer = (await messages(live, token, conversation))[-1]
    assert answer["status"] == "cancelled"
    assert answer["content"] and not answer["content"].endswith("Gemini.")  # partial, kept
    assert (seen + out).decode() == answer["content"] + "\n"  # printed up to the cancel
    assert "stopping the answer" in err
    assert f"answer cancelled; the partial answer is kept: cero messages {conversation}" in err
    assert "Traceback" not in err and "cero: error" not in err


async def test_a_second_ctrl_c_quits_at_once(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})
    try:
        proc = await cli.start("chat", "a cancel that hangs", CERO_API_URL=via)
        assert proc.stdout is not None and proc.stderr is not None
        await read_until(proc.stdout, b"This is", bytearray())
        proxy.hold()  # the cancel request (and the stream) get no answer
        proc.send_signal(signal.SIGINT)
        await read_until(proc.stderr, b"Ctrl-C again quits now", bytearray())
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        proxy.release()
        await proxy.close()
    assert proc.returncode == 130
    conversation = await only_conversation(live, token)
    last = err.decode().splitlines()[-1]
    assert last == f"cero: interrupted; the answer was asked to stop (cero messages {conversation})"


async def test_a_server_killed_mid_answer_is_one_friendly_line(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})
    try:
        proc = await cli.start("chat", "the server dies", CERO_API_URL=via)
        assert proc.stdout is not None
        await read_until(proc.stdout, b"This is", bytearray())
        await proxy.refuse()  # cut mid-answer (the chunked body ends early), then refused
        _, err_bytes = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        await proxy.close()
    err = err_bytes.decode()
    assert proc.returncode == 4, err
    conversation = await only_conversation(live, token)
    lines = err.splitlines()
    assert len(lines) == 2, err  # the retry's note, then the error
    assert lines[0].startswith("(connection lost: the server closed the connection")
    assert lines[1] == (
        "cero: error: the server closed the connection mid-answer (connection refused); "
        f"the answer may still be running: cero watch {conversation}"
    )
    for raw in ("Traceback", "TransferEncodingError", "ClientPayloadError", "aiohttp"):
        assert raw not in err
    assert one_error_line(lines[1])


async def test_server_without_a_scheme(cli: Cli, live: Live) -> None:
    """``--server 127.0.0.1:PORT``: http:// is assumed for this machine."""
    await signed_in(cli)
    bare = live.url.removeprefix("http://")
    code, out, err = await cli.run("models", "--server", bare)
    assert code == 0 and "demo" in out, err
    code, out, err = await cli.run("whoami", "--server", bare)  # the same saved token
    assert code == 0 and "Ada" in out, err


async def answer_completes(live: Live, token: str, conversation: str) -> dict[str, Any]:
    """The conversation's last answer once it is no longer streaming."""
    async with asyncio.timeout(WAIT):
        while True:
            answer = (await messages(live, token, conversation))[-1]
            if answer["role"] == "assistant" and answer["status"] != "streaming":
                return answer
            await asyncio.sleep(0.1)


async def test_detach_on_interrupt_leaves_the_answer_running(cli: Cli, live: Live) -> None:
    """``--detach-on-interrupt``: Ctrl-C stops reading, not the answer; exit 130 names
    ``cero watch ID`` and ``cero cancel ID``."""
    token = await signed_in(cli)
    proc = await cli.start("chat", "--detach-on-interrupt", "keep going without me")
    assert proc.stdout is not None
    seen = bytearray()
    await read_until(proc.stdout, b"This is", seen)
    proc.send_signal(signal.SIGINT)
    out, err_bytes = await asyncio.wait_for(proc.communicate(), WAIT)
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    conversation = await only_conversation(live, token)
    assert err.splitlines()[-1] == (
        f"cero: detached; the answer goes on on the server (follow it: cero watch "
        f"{conversation}; stop it: cero cancel {conversation})"
    )
    assert "stopping the answer" not in err and "Traceback" not in err
    printed = (seen + out).decode()
    answer = await answer_completes(live, token, conversation)
    assert answer["status"] == "complete"
    assert answer["content"].endswith("Gemini.")  # it went on to the end
    assert printed.endswith("\n") and not printed.rstrip("\n").endswith("Gemini.")  # cut short
    assert answer["content"].startswith(printed.rstrip("\n"))


async def test_detach_in_the_interactive_mode_by_environment(cli: Cli, live: Live) -> None:
    """``CERO_DETACH_ON_INTERRUPT=1`` in ``chat -i``: Ctrl-C during an answer ends the
    session (130), the answer runs on."""
    token = await signed_in(cli)
    proc = await cli.start("chat", "-i", CERO_DETACH_ON_INTERRUPT="1")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"a long answer please\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, b"This is", bytearray())
    proc.send_signal(signal.SIGINT)
    _, err_bytes = await asyncio.wait_for(proc.communicate(), WAIT)
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    conversation = await only_conversation(live, token)
    assert f"follow it: cero watch {conversation}; stop it: cero cancel {conversation}" in err
    answer = await answer_completes(live, token, conversation)
    assert answer["status"] == "complete" and answer["content"].endswith("Gemini.")


async def test_detach_before_the_server_named_the_conversation(cli: Cli, live: Live) -> None:
    """Ctrl-C while the request is still on its way (a relay holds it): the CLI says it
    detaches once the server has the message, and does when the conversation is named."""
    token = await signed_in(cli)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})
    try:
        proxy.hold()  # the POST waits in the relay
        proc = await cli.start("chat", "-d", "held on the way", CERO_API_URL=via)
        assert proc.stderr is not None
        await asyncio.wait_for(proxy.accepted.wait(), WAIT)  # its request waiting
        proc.send_signal(signal.SIGINT)
        await read_until(proc.stderr, b"(detaching once the server has the message", bytearray())
        proxy.release()
        _, err_bytes = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        proxy.release()
        await proxy.close()
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    conversation = await only_conversation(live, token)
    assert f"(follow it: cero watch {conversation}; stop it: cero cancel {conversation})" in err
    answer = await answer_completes(live, token, conversation)
    assert answer["status"] == "complete" and answer["content"].endswith("Gemini.")
