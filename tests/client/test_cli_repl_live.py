"""``cero chat -i`` on one WebSocket, against a live server (issue 25): its sends, its
cancel and every device's live events travel on the socket (the server's own counters say
so: one ``101`` on ``/api/ws``, no ``POST /api/chat``, no ``POST …/cancel``); a turn sent
from another device shows up in the session; the conversation deleted elsewhere is said
and the next line opens a new one; a socket cut mid-answer resumes without a gap or a
duplicate; signing the session out ends the mode (exit 3). Behind a proxy that refuses
WebSocket upgrades the same session says so once and runs over HTTP and SSE."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.auth_helpers import bearer
from tests.client.cli_harness import (
    WAIT,
    Cli,
    Proxy,
    messages,
    read_until,
    rest,
    signed_in,
    terminal,
)
from tests.client.sdk.proxies import Refusal, RefusingProxy
from tests.conftest import Live
from tests.process_stats import METRICS_AUTH

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

END = b"Gemini.\n"  # the demo model's answer ends so


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli-repl-live') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """An answer of about two seconds: long enough to press Ctrl-C or cut it mid-way."""
    return {"demo_token_delay": 0.06}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


Counts = dict[tuple[str, str, str], float]


async def responses(live: Live) -> Counts:
    """``cero_http_responses_total`` by (method, route, status)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/metrics", headers=METRICS_AUTH) as resp:
            text = await resp.text()
    found: Counts = {}
    pattern = r'^cero_http_responses_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} (\S+)$'
    for method, route, status, value in re.findall(pattern, text, re.M):
        found[(method, route, status)] = float(value)
    return found


def grew(before: Counts, after: Counts) -> dict[tuple[str, str], float]:
    """The responses counted between two scrapes, by (method, route)."""
    counted: dict[tuple[str, str], float] = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta:
            counted[key[:2]] = counted.get(key[:2], 0.0) + delta
    return counted


async def conversation_ids(live: Live, token: str) -> list[str]:
    """Oldest first."""
    _, page = await rest(live, token, "GET", "/api/conversations")
    return [str(c["id"]) for c in reversed(page["conversations"])]


async def chat_from_another_device(live: Live, token: str, conversation: str, text: str) -> str:
    """A turn sent over HTTP, as the web page or a phone would; its whole answer."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            live.url + "/api/chat",
            json={"message": text, "conversationId": conversation},
            headers={**bearer(token), "Accept": "text/event-stream"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.text()
    (done,) = re.findall(r'^data: (\{"type":"done".*)$', body, re.M)
    return str(orjson.loads(done)["fullText"])


def transcript(stored: list[dict[str, Any]], typed_here: set[str]) -> bytes:
    """What stdout holds when nothing was lost or printed twice: every answer, and each
    message sent from another device as ``> `` lines before its answer."""
    out = ""
    for m in stored:
        if m["role"] == "assistant":
            out += m["content"] + "\n"
        elif m["content"] not in typed_here:
            out += "".join(f"> {line}\n" for line in m["content"].split("\n"))
    return out.encode()


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Ctrl-D; the exit code and the rest of stderr."""
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), WAIT)
    assert proc.returncode is not None
    return proc.returncode, (await proc.stderr.read()).decode()


async def test_the_session_runs_on_one_websocket(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    before = await responses(live)
    code, out, err = await cli.run("chat", "-i", stdin=b"first turn\nsecond turn\n/new\nthird\n")
    assert code == 0, err
    counted = grew(before, await responses(live))
    assert counted.get(("GET", "/api/ws")) == 1, counted  # one socket, upgraded once
    assert ("POST", "/api/chat") not in counted, counted
    first, second = await conversation_ids(live, token)
    one, two = await messages(live, token, first), await messages(live, token, second)
    assert [m["content"] for m in one if m["role"] == "user"] == ["first turn", "second turn"]
    assert [m["content"] for m in two if m["role"] == "user"] == ["third"]
    answers = [m["content"] for m in one + two if m["role"] == "assistant"]
    assert out == "".join(a + "\n" for a in answers)
    assert "refused" not in err


async def test_a_turn_from_another_device_shows_up_in_the_session(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proc = await cli.start("chat", "-i")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello from the terminal\n")
    await proc.stdin.drain()
    seen = bytearray()
    await read_until(proc.stdout, END, seen)
    (conversation,) = await conversation_ids(live, token)
    answer = await chat_from_another_device(live, token, conversation, "sent from\nmy phone")
    # The other device's message as `> ` lines, then its answer, streamed into the session.
    shown = b"> sent from\n> my phone\n" + answer.encode() + b"\n"
    await read_until(proc.stdout, shown, seen)
    code, err = await finish(proc)
    assert code == 0, err
    stored = await messages(live, token, conversation)
    assert bytes(seen) == transcript(stored, {"hello from the terminal"})


async def test_ctrl_c_cancels_over_the_socket(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    before = await responses(live)
    proc = await cli.start("chat", "-i")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"a long answer please\n")
    await proc.stdin.drain()
    seen = bytearray()
    await read_until(proc.stdout, b"This is", seen)
    proc.send_signal(signal.SIGINT)
    await read_until(proc.stderr, b"the partial answer is kept", bytearray())
    proc.stdin.write(b"and another\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, END, seen)
    code, err = await finish(proc)
    assert code == 0, err
    counted = grew(before, await responses(live))
    assert counted.get(("GET", "/api/ws")) == 1, counted
    assert ("POST", "/api/conversations/{id}/cancel") not in counted, counted
    assert ("POST", "/api/chat") not in counted, counted
    (conversation,) = await conversation_ids(live, token)
    stored = await messages(live, token, conversation)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert bytes(seen).startswith(stored[1]["content"].encode())


async def test_deleted_elsewhere_the_next_line_opens_a_new_conversation(
    cli: Cli, live: Live
) -> None:
    token = await signed_in(cli)
    proc = await cli.start("chat", "-i")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"one\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, END, bytearray())
    (first,) = await conversation_ids(live, token)
    status, _ = await rest(live, token, "DELETE", f"/api/conversations/{first}")
    assert status == 200
    await read_until(proc.stderr, b"your next message starts a new conversation", bytearray())
    proc.stdin.write(b"two\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, END, bytearray())
    code, err = await finish(proc)
    assert code == 0, err
    (second,) = await conversation_ids(live, token)
    assert second != first
    assert (await messages(live, token, second))[0]["content"] == "two"


def upgrades(proxy: Proxy) -> list[bytes]:
    return [head for head in proxy.heads if head.startswith(b"GET /api/ws ")]


async def reconnected(proxy: Proxy) -> None:
    while len(upgrades(proxy)) < 2:
        await asyncio.sleep(0.05)


async def test_a_socket_cut_mid_answer_resumes_without_gap_or_duplicate(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    token = await signed_in(cli)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    url = await proxy.start()
    via = Cli(cli.home, url)
    via.save_token(token)
    try:
        proc = await via.start("chat", "-i")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"cut me\n")
        await proc.stdin.drain()
        seen = bytearray()
        await read_until(proc.stdout, b"This is", seen)
        proxy.drop()  # the socket (and nothing else: it is the only connection) is cut
        await read_until(proc.stdout, END, seen)
        await asyncio.wait_for(reconnected(proxy), WAIT)  # (the answer may have ended)
        code, err = await finish(proc)
    finally:
        await proxy.close()
    assert code == 0, err
    assert len(upgrades(proxy)) == 2  # the first socket and the one that resumed
    (conversation,) = await conversation_ids(live, token)
    answer = (await messages(live, token, conversation))[-1]
    assert answer["status"] == "complete"
    assert bytes(seen) == answer["content"].encode() + b"\n"


async def test_signed_out_elsewhere_the_session_ends(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proc = await cli.start("chat", "-i")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hi\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, END, bytearray())
    async with aiohttp.ClientSession() as http:
        async with http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as resp:
            assert resp.status == 200
    await asyncio.wait_for(proc.wait(), WAIT)
    assert proc.returncode == 3
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert "ended this session (signed out, revoked or expired); run `cero login`" in err


@pytest_asyncio.fixture(loop_scope="module", params=[403, 405, 400, "close"])
async def refusing(live: Live, request: pytest.FixtureRequest) -> AsyncIterator[RefusingProxy]:
    refusal: Refusal = request.param
    proxy = RefusingProxy(live.url, refusal)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_behind_a_proxy_that_refuses_websockets_it_runs_over_sse(
    cli: Cli, live: Live, refusing: RefusingProxy
) -> None:
    token = await signed_in(cli)
    via = Cli(cli.home, refusing.url)
    via.save_token(token)
    before = await responses(live)
    proc = await via.start("chat", "-i")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    err = bytearray()
    await read_until(proc.stderr, b"chatting over HTTP and Server-Sent Events)\n", err)
    proc.stdin.write(b"first over http\n")
    await proc.stdin.drain()
    seen = bytearray()
    await read_until(proc.stdout, END, seen)
    (conversation,) = await conversation_ids(live, token)
    # Another device's turn reaches the session over the conversation's event stream.
    answer = await chat_from_another_device(live, token, conversation, "from the web page")
    await read_until(proc.stdout, b"> from the web page\n" + answer.encode() + b"\n", seen)
    # Ctrl-C cancels over POST …/cancel; the session goes on.
    proc.stdin.write(b"stop this one\n")
    await proc.stdin.drain()
    third = bytearray()
    await read_until(proc.stdout, b"This is", third)
    proc.send_signal(signal.SIGINT)
    await read_until(proc.stderr, b"the partial answer is kept", err)
    seen += third
    code, rest_of_err = await finish(proc)
    assert code == 0, rest_of_err
    seen += await proc.stdout.read()
    text = (bytes(err) + rest_of_err.encode()).decode()
    assert text.count("was refused on the way") == 1
    assert refusing.refused == 1 and refusing.passed > 0
    counted = grew(before, await responses(live))
    assert ("GET", "/api/ws") not in counted, counted
    # The session's two turns, and the one the test sent as another device.
    assert counted.get(("POST", "/api/chat")) == 3, counted
    assert counted.get(("POST", "/api/conversations/{id}/cancel")) == 1, counted
    stored = await messages(live, token, conversation)
    assert [(m["role"], m["status"]) for m in stored][-2:] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
    ]
    assert [m["content"] for m in stored if m["role"] == "user"] == [
        "first over http",
        "from the web page",
        "stop this one",
    ]
    assert bytes(seen) == transcript(stored, {"first over http", "stop this one"})


async def test_json_prints_the_conversations_events(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, out, err = await cli.run("chat", "-i", "--json", stdin=b"as json\n")
    assert code == 0, err
    events = [orjson.loads(line) for line in out.splitlines()]
    kinds = [e["type"] for e in events if e["type"] != "presence"]
    assert kinds[:2] == ["message", "init"] and kinds[-1] == "done", kinds
    (conversation,) = await conversation_ids(live, token)
    stored = await messages(live, token, conversation)
    text = "".join(e["text"] for e in events if e["type"] == "token")
    done = next(e for e in events if e["type"] == "done")
    assert text == done["fullText"] == stored[-1]["content"]
