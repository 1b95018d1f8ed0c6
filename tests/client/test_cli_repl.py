"""``cero chat -i``, the interactive mode, against a live server: lines are sends in one
conversation, ``/new`` and ``/model`` change where and how, Ctrl-C stops the answer being
written and the session goes on, end of input leaves."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.client.cli_harness import (
    WAIT,
    Cli,
    messages,
    read_until,
    rest,
    signed_in,
    terminal,
)
from tests.conftest import Live

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli-repl') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"demo_token_delay": 0.05}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def conversations(live: Live, token: str) -> list[str]:
    """Ids, oldest first."""
    _, page = await rest(live, token, "GET", "/api/conversations")
    return [str(c["id"]) for c in reversed(page["conversations"])]


async def test_lines_are_turns_of_one_conversation_until_new(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    script = b"first turn\n\n/model demo\nsecond turn\n/new\nthird turn\n/help\n/bogus\n"
    code, out, err = await cli.run("chat", "-i", stdin=script)
    assert code == 0, err
    first, second = await conversations(live, token)
    one, two = await messages(live, token, first), await messages(live, token, second)
    assert [m["content"] for m in one if m["role"] == "user"] == ["first turn", "second turn"]
    assert [m["content"] for m in two if m["role"] == "user"] == ["third turn"]
    assert one[-1]["aiModel"] == "demo"
    answers = [m["content"] for m in one + two if m["role"] == "assistant"]
    assert out == "".join(a + "\n" for a in answers)  # stdout: the answers only
    assert "(answering with demo from now on)" in err
    assert "(a new conversation starts with your next message)" in err
    assert "/model [ID]" in err and "unknown command /bogus" in err


async def test_ctrl_c_stops_the_answer_and_the_session_goes_on(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    proc = await cli.start("chat", "-i")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"a long answer please\n")
    await proc.stdin.drain()
    seen = bytearray()
    await read_until(proc.stdout, b"This is", seen)
    proc.send_signal(signal.SIGINT)
    await read_until(proc.stderr, b"the partial answer is kept", bytearray())
    # Ctrl-C at the prompt: a hint, not an exit.
    proc.send_signal(signal.SIGINT)
    await read_until(proc.stderr, b"(Ctrl-D or /exit leaves)", bytearray())
    proc.stdin.write(b"and another\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, b"Gemini.\n", seen)
    proc.stdin.close()  # Ctrl-D
    await asyncio.wait_for(proc.wait(), WAIT)
    assert proc.returncode == 0
    (conversation,) = await conversations(live, token)
    stored = await messages(live, token, conversation)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert stored[3]["content"].endswith("Gemini.")


async def test_a_refused_turn_is_an_error_line_and_the_session_goes_on(
    cli: Cli, live: Live
) -> None:
    await signed_in(cli)
    code, out, err = await cli.run(
        "chat", "-i", stdin=b"/model no-such-model\nhi\n/model demo\nhi again\n"
    )
    assert code == 0, err
    assert "unknown model 'no-such-model'; run `cero models` for the list (unknown_model)" in err
    assert "hi again" in out
