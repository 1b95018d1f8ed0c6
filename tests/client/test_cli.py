"""The ``cero`` console script as a subprocess against a live server on a real port.

The CLI's config folder is a tmp dir (``XDG_CONFIG_HOME``) and the keyring is the null
backend, so tokens go to the 0600 file (``tests/client/cli_harness.py``). Device approvals
are done over HTTP by the test; a network drop is a TCP proxy between the CLI and the server
that the test cuts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import unused_port

from actors.models.titles import provisional_title
from client.api import Api
from client.credentials import CredentialStore
from client.follow import Follower
from client.output import Output
from client.sse import ServerSentEvent
from tests.auth_helpers import make_user_session
from tests.client.cli_harness import (
    CERO,
    WAIT,
    Cli,
    Proxy,
    messages,
    one_error_line,
    only_conversation,
    read_until,
    rest,
    signed_in,
    terminal,
)
from tests.conftest import Live
from tests.live_clients import post_chat

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the CLI's behaviour does not depend on the engine."""
    return f"sqlite:///{tmp_path_factory.mktemp('cli') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """A server with a secret (production-like: no model fallback), a demo answer of about
    two seconds (so a test sees it mid-way) and a one-second device poll interval."""
    return {"demo_token_delay": 0.05, "device_poll_interval": 1}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


# -- login / whoami / logout ---------------------------------------------------------------


async def test_login_with_the_device_flow_then_whoami(cli: Cli, live: Live) -> None:
    proc = await cli.start("login", "--no-browser")
    assert proc.stderr is not None
    seen = bytearray()
    await read_until(proc.stderr, b"enter the code: ", seen)
    await read_until(proc.stderr, b")\n", seen)  # and the "(or open <complete URL>)" line
    text = seen.decode()
    user_code = text.split("enter the code: ")[1].split()[0]
    assert len(user_code) == 9 and user_code[4] == "-"
    assert f"{live.url}/device?user_code={user_code}" in text
    approver, _ = await make_user_session("Grace", "grace@example.test")
    status, body = await rest(
        live, approver, "POST", "/api/auth/device/approve", json={"userCode": user_code}
    )
    assert status == 200, body
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, (seen + err).decode()
    assert "Signed in to" in err.decode() and "Grace <grace@example.test>" in err.decode()
    path = cli.config / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o700
    saved = orjson.loads(path.read_bytes())["servers"][live.url]
    assert saved["store"] == "file"
    status, who = await rest(live, saved["token"], "GET", "/api/user/whoami")
    assert status == 200 and who["user"]["name"] == "Grace"
    code, out_text, err_text = await cli.run("whoami")
    assert code == 0, err_text
    assert out_text == f"Grace <grace@example.test> on {live.url}\n"


async def test_login_refuses_a_store_it_cannot_use_before_asking_for_a_code(cli: Cli) -> None:
    """Issue 20, item 10: a credentials.json the CLI did not write failed the login only
    after the server had approved it, leaving a live session nobody holds."""
    cli.config.mkdir(parents=True)
    cli.config.chmod(0o777)
    (cli.config / "credentials.json").write_text('{"written by": "another tool"}')
    proc = await cli.start("login", "--no-browser")
    assert proc.stderr is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith(("cero: error: ", "To sign in")):
        line = await asyncio.wait_for(proc.stderr.readline(), WAIT)
        assert line, lines
        lines.append(line.decode())
    assert "not a cero credentials file" in lines[-1], lines  # not "To sign in …"
    assert await proc.wait() == 1
    assert [line.split()[3] for line in lines[:-1]] == [
        "config_folder_tightened",
        "credentials_file_tightened",
    ], lines
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o700


async def test_logout_revokes_the_token_on_the_server(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("logout")
    assert code == 0, err
    status, _ = await rest(live, token, "GET", "/api/user/whoami")
    assert status == 401
    assert live.url not in orjson.loads((cli.config / "credentials.json").read_bytes())["servers"]
    code, _, err = await cli.run("whoami")
    assert code == 3 and "not signed in" in one_error_line(err)


# -- chat --------------------------------------------------------------------------------------


async def test_chat_streams_to_stdout_as_the_answer_arrives(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proc = await cli.start("chat", "hello streaming world")
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.read(1), WAIT)
    assert first
    # The first byte is out while the answer is still being generated.
    conversation = await only_conversation(live, token)
    answer = (await messages(live, token, conversation))[-1]
    assert answer["role"] == "assistant" and answer["status"] == "streaming"
    rest_out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, err
    stored = (await messages(live, token, conversation))[-1]
    assert stored["status"] == "complete"
    assert (first + rest_out).decode() == stored["content"] + "\n"
    assert "hello streaming world" in stored["content"]
    assert err == b""  # no TTY: no progress, no notes


async def test_chat_json_is_ndjson_events(cli: Cli, live: Live) -> None:
    await signed_in(cli)
    code, out, err = await cli.run("chat", "json please", "--json", "--model", "demo")
    assert code == 0, err
    events = [orjson.loads(line) for line in out.splitlines()]
    kinds = [e["type"] for e in events if e["type"] != "presence"]
    assert kinds[:2] == ["message", "init"] and kinds[-1] == "done"
    assert set(kinds[2:-1]) == {"token"}
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == events[-1]["fullText"] and "json please" in tokens
    assert events[1]["aiModel"] == "demo"


async def test_chat_reads_stdin_and_continues_a_conversation(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "first turn")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    code, out, err = await cli.run("chat", "-", "-c", conversation, stdin=b"second turn\n")
    assert code == 0, err
    assert "You said: \u201csecond turn\u201d" in out
    assert "I can see 3 messages" in out
    assert [m["role"] for m in await messages(live, token, conversation)] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]


async def test_chat_continue_last_goes_to_the_newest_conversation(cli: Cli, live: Live) -> None:
    """``-C`` (not ``-c`` without an ID: argparse would read ``-c "hi"`` as the ID)."""
    token = await signed_in(cli)
    code, out, err = await cli.run("chat", "-C", "nothing yet")
    assert code == 1 and "no conversation to continue" in one_error_line(err)
    for text in ("older one", "newer one"):
        code, _, err = await cli.run("chat", text)
        assert code == 0, err
    _, page = await rest(live, token, "GET", "/api/conversations")
    newer, older = (c["id"] for c in page["conversations"])
    code, out, err = await cli.run("chat", "-C", "and again")
    assert code == 0, err
    assert "You said: \u201cand again\u201d" in out
    assert [m["content"] for m in await messages(live, token, newer) if m["role"] == "user"] == [
        "newer one",
        "and again",
    ]
    assert len(await messages(live, token, older)) == 2
    code, _, err = await cli.run("chat", "-C", "-c", older, "both")
    assert code == 2 and "not allowed with" in err
    # `-c MESSAGE` alone, like `llm -c`: the newest conversation too.
    code, out, err = await cli.run("chat", "-c", "like llm")
    assert code == 0, err
    assert [m["content"] for m in await messages(live, token, newer) if m["role"] == "user"][
        -1
    ] == "like llm"
    code, _, err = await cli.run("chat")
    assert code == 2 and "needs a message" in err


async def test_cancel_stops_a_streaming_chat(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    chat = await cli.start("chat", "a long one")
    assert chat.stdout is not None
    assert await asyncio.wait_for(chat.stdout.read(1), WAIT)
    conversation = await only_conversation(live, token)
    code, _, err = await cli.run("cancel", conversation)
    assert code == 0 and "Cancelled the answer." in err
    _, chat_err = await asyncio.wait_for(chat.communicate(), WAIT)
    assert chat.returncode == 1
    assert one_error_line(chat_err.decode()) == "cero: error: the answer was cancelled"
    assert (await messages(live, token, conversation))[-1]["status"] == "cancelled"
    code, out, err = await cli.run("conversations")
    assert code == 0 and out.startswith(conversation + "  ") and "a long one" in out
    code, out, err = await cli.run("messages", conversation)
    assert code == 0 and "you:\na long one" in out and "(cancelled)" in out


# -- the terminal: no escape sequences from the server --------------------------------------------

#: What a web page could make a model say: retitle the window, clear the screen, write the
#: clipboard (OSC 52), a link hidden behind text (OSC 8), a one-character C1 CSI.
ATTACK = (
    "hi \x1b]0;pwned\x07 \x1b[2J \x1b]52;c;aGk=\x07 "
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ \x9b31mred"
)
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} - {"\n", "\t"}


async def test_answers_and_titles_reach_the_terminal_without_escape_sequences(
    cli: Cli, live: Live
) -> None:
    token = await signed_in(cli)
    code, out, err = await cli.run("chat", ATTACK)  # the demo model says it back
    assert code == 0, err
    conversation = await only_conversation(live, token)
    stored = (await messages(live, token, conversation))[-1]["content"]
    assert "\x1b]52;c;aGk=\x07" in stored  # the answer did carry them
    assert not CONTROLS & set(out), repr(out)
    assert "You said: \u201chi    click red\u201d" in out  # the text itself stays
    code, listed, err = await cli.run("conversations")
    assert code == 0 and not CONTROLS & set(listed + err), repr(listed)
    # The title is the message's first 50 characters: "hi" and escape sequences (the
    # last one cut short), which the listing drops.
    assert listed.startswith(conversation + "  ")
    assert listed.rstrip("\n").split("  ", 2)[2].strip() == "hi", repr(listed)
    code, shown, err = await cli.run("messages", conversation)
    assert code == 0 and not CONTROLS & set(shown), repr(shown)
    # Asked for: byte-exact.
    code, raw, err = await cli.run("messages", conversation, "--raw")
    assert code == 0 and f"you:\n{ATTACK}\n" in raw and f"{stored}\n" in raw
    code, lines, err = await cli.run("conversations", "--json")
    assert code == 0 and orjson.loads(lines)["shortTitle"] == provisional_title(ATTACK)
    code, raw, err = await cli.run("chat", ATTACK, "--raw", "-c", conversation)
    assert code == 0, err
    assert raw == (await messages(live, token, conversation))[-1]["content"] + "\n"
    # An error line quoting the server's text is filtered too.
    code, _, err = await cli.run("watch", "no-such-\x1b]0;x\x07conversation")
    assert code == 1 and not CONTROLS & set(err), repr(err)


# -- errors: one line, a non-zero exit -----------------------------------------------------------


async def test_errors_are_one_line_with_an_exit_code(cli: Cli, live: Live) -> None:
    code, _, err = await cli.run("chat", "hi")
    assert code == 3 and "not signed in" in one_error_line(err)

    cli.save_token("not-a-token")
    code, out, err = await cli.run("chat", "hi")
    assert code == 3 and out == ""
    assert "rejected the saved token" in one_error_line(err)

    await signed_in(cli)
    code, _, err = await cli.run("chat", "hi", "--model", "gemini-2.5-flash-lite")
    line = one_error_line(err)
    assert code == 1 and "unknown_model" in line and "gemini-2.5-flash-lite" in line
    code, _, err = await cli.run("chat", "hi", "--model", "no-such-model")
    assert code == 1 and "unknown model 'no-such-model'" in one_error_line(err)
    code, _, err = await cli.run("watch", "no-such-conversation")
    assert code == 1 and "(not_found)" in one_error_line(err)

    dead = f"http://127.0.0.1:{unused_port()}"
    code, _, err = await cli.run("models", CERO_API_URL=dead)
    line = one_error_line(err)
    assert code == 4 and f"cannot reach the server at {dead}: connection refused" in line
    code, _, err = await cli.run("chat", "hi", "--server", dead)
    assert code == 3  # signed in to the live server only
    CredentialStore(cli.config, "file").save(dead, "t", {})
    code, _, err = await cli.run("chat", "hi", "--server", dead)
    assert code == 4 and "cannot reach the server" in one_error_line(err)

    code, _, err = await cli.run("chat", "--tool", "bogus", "hi")
    assert code == 2  # argparse's usage error


# -- watch: resuming across a network drop -----------------------------------------------------


async def test_watch_resumes_after_a_network_drop_with_last_event_id(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "start a conversation")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})  # tokens are kept per server URL
    try:
        watch = await cli.start("watch", conversation, "--once", CERO_API_URL=via)
        assert watch.stdout is not None
        await proxy.next_answer(b"/messages")  # looked for an answer in progress (none)
        # then subscribed (on that kept-alive connection) and looked again: one that
        # started between the two would have no cursor (it is shown from REST).
        await proxy.next_answer(b"/messages")
        async with aiohttp.ClientSession() as http:

            async def chat() -> tuple[int, bytes]:
                async with post_chat(
                    http, live.url, token, message="watch this", conversationId=conversation
                ) as resp:
                    return resp.status, await resp.read()  # to the answer's end (NDJSON)

            send = asyncio.create_task(chat())
            seen = bytearray()
            await read_until(watch.stdout, b"> watch this\nThis is", seen)
            proxy.drop()  # mid-answer
            try:
                await proxy.next_answer(b"/events")  # resumed
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    watch.kill()
                _, late = await watch.communicate()
                raise AssertionError(f"no resume: {late.decode()} {proxy.heads}") from None
            status, _ = await send
            assert status == 200
        out, err_bytes = await asyncio.wait_for(watch.communicate(), WAIT)
    finally:
        await proxy.close()
    err = err_bytes.decode()
    assert watch.returncode == 0, err
    _, first, _, answer = await messages(live, token, conversation)
    assert answer["status"] == "complete"
    history = f"> start a conversation\n{first['content']}\n"  # printed before going live
    assert (seen + out).decode() == f"{history}> watch this\n{answer['content']}\n"
    assert "connection lost" in err
    resumed = [h for h in proxy.heads if b"/events" in h.split(b"\r\n", 1)[0]]
    # The first subscribe may reuse the /messages connection (its head is not relayed
    # separately); the resume is a new connection with the cursor.
    assert [b"last-event-id: " in h.lower() for h in resumed][-1:] == [True], proxy.heads
    assert sum(b"last-event-id: " in h.lower() for h in resumed) == 1
    with contextlib.suppress(ProcessLookupError):
        watch.kill()


async def test_chat_resumes_after_a_network_drop(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proxy = Proxy(int(live.url.rsplit(":", 1)[1]))
    via = await proxy.start()
    CredentialStore(cli.config, "file").save(via, token, {})
    try:
        chat = await cli.start("chat", "survive a drop", CERO_API_URL=via)
        assert chat.stdout is not None
        await proxy.next_answer(b"/api/chat")
        seen = bytearray()
        await read_until(chat.stdout, b"This is", seen)
        proxy.drop()  # mid-answer
        await proxy.next_answer(b"/events")  # resumed from its cursor
        out, err = await asyncio.wait_for(chat.communicate(), WAIT)
    finally:
        await proxy.close()
    assert chat.returncode == 0, err
    conversation = await only_conversation(live, token)
    answer = (await messages(live, token, conversation))[-1]
    assert (seen + out).decode() == answer["content"] + "\n"  # nothing twice, nothing lost
    assert b"connection lost" in err
    resumed = [h for h in proxy.heads if b"/events" in h.split(b"\r\n", 1)[0]]
    assert len(resumed) == 1 and b"last-event-id: " in resumed[0].lower()
    assert len([h for h in proxy.heads if h.startswith(b"POST /api/chat")]) == 1


async def test_watch_joins_an_answer_in_progress(cli: Cli, live: Live) -> None:
    """``watch`` opened mid-answer prints it whole and token by token (replayed from its
    ``resumeCursor``): every moment's stdout is a prefix of the final text, nothing twice."""
    token = await signed_in(cli)
    async with aiohttp.ClientSession() as http:
        async with post_chat(
            http, live.url, token, message="join me while many words stream one by one"
        ) as resp:
            init = orjson.loads(await resp.content.readline())
            assert init["topic"] == "init"
            assert orjson.loads(await resp.content.readline())["topic"] == "token"
            conversation = init["data"]["conversationId"]
            proc = await cli.start("watch", conversation, "--once")
            assert proc.stdout is not None and proc.stderr is not None
            shown: list[bytes] = [b""]
            while chunk := await asyncio.wait_for(proc.stdout.read(4096), WAIT):
                shown.append(shown[-1] + chunk)
            err = (await proc.stderr.read()).decode()
            assert await proc.wait() == 0, err
            lines = [orjson.loads(raw) for raw in (await resp.read()).splitlines() if raw.strip()]
    full = next(line["data"]["fullText"] for line in lines if line["topic"] == "done")
    assert full == (await messages(live, token, conversation))[-1]["content"]
    expected = f"> join me while many words stream one by one\n{full}\n".encode()
    assert shown[-1] == expected, (shown[-1], expected)
    assert all(expected.startswith(moment) for moment in shown), shown  # no gap, no duplicate
    assert len(shown) > 3, shown  # streamed as it came, not completed at the end
    assert "joining an answer in progress" in err


async def test_reset_completes_the_answer_from_rest(cli: Cli, live: Live) -> None:
    """After `reset` (a cursor the server cannot replay) the answer in progress is finished
    from the stored messages: here it ended while the client was away."""
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "reset me")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    stored = (await messages(live, token, conversation))[-1]
    out = io.BytesIO()
    async with Api(live.url, token) as api:
        follower = Follower(
            api,
            Output(out, io.StringIO()),
            "chat",
            conversation_id=conversation,
            message_id=stored["id"],
            printed={stored["id"]: stored["content"][:7]},
        )
        reset = {"type": "reset", "conversationId": conversation, "epoch": "e", "seq": 9}
        done = await follower.handle(ServerSentEvent("reset", orjson.dumps(reset).decode(), ""))
    assert done and follower.result is None
    assert stored["content"][:7] + out.getvalue().decode() == stored["content"] + "\n"


async def test_a_reader_that_goes_away_ends_chat_quietly(cli: Cli, live: Live) -> None:
    """`cero chat … | head -c 20`: a broken stdout pipe is not a network drop to resume."""
    await signed_in(cli)
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        str(CERO),
        "chat",
        "a reader that leaves",
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
        env=cli.env(),
    )
    cli.procs.append(proc)
    os.close(write_end)
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(None, os.read, read_end, 1)
    assert first
    os.close(read_end)  # the reader is gone
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0 and err == b""
