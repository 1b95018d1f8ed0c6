"""``cero instructions`` as a subprocess against a live server (docs/cli.md; docs/api.md,
"Instructions"): the user's own and one conversation's, shown, set (also from stdin) and
cleared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.auth_helpers import make_user_session
from tests.client.cli_harness import (
    Cli,
    one_error_line,
    only_conversation,
    rest,
    signed_in,
    terminal,
)
from tests.conftest import Live
from tests.live_clients import new_conversation

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the CLI's behaviour does not depend on the engine."""
    return f"sqlite:///{tmp_path_factory.mktemp('cli-instructions') / 'cero.db'}"


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def test_the_users_instructions_shown_set_and_cleared(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, out, err = await cli.run("instructions")
    assert (code, out) == (0, "") and "No instructions for all your conversations" in err
    code, out, err = await cli.run("instructions", "--set", "I am a botanist.")
    assert code == 0 and out == "" and "saved (16 characters)" in err, err
    assert await rest(live, token, "GET", "/api/user/instructions") == (
        200,
        {"instructions": "I am a botanist."},
    )
    code, out, _ = await cli.run("instructions")
    assert (code, out) == (0, "I am a botanist.\n")
    code, out, _ = await cli.run("instructions", "--json")
    assert orjson.loads(out) == {"instructions": "I am a botanist."}
    code, _, err = await cli.run("instructions", "--set", "-", stdin=b"Line one\nline two\n")
    assert code == 0, err
    code, out, _ = await cli.run("instructions")
    assert out == "Line one\nline two\n"
    code, _, err = await cli.run("instructions", "--clear")
    assert code == 0 and "cleared" in err
    assert await rest(live, token, "GET", "/api/user/instructions") == (
        200,
        {"instructions": None},
    )


async def test_a_conversations_instructions(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "hi", "--model", "demo")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    code, out, err = await cli.run("instructions", "-c", conversation)
    assert (code, out) == (0, "") and "No instructions for this conversation" in err
    code, _, err = await cli.run("instructions", "-c", conversation, "--set", "Be terse.")
    assert code == 0, err
    _, shown = await rest(live, token, "GET", f"/api/conversations/{conversation}/messages")
    assert shown["conversation"]["instructions"] == "Be terse."
    code, out, _ = await cli.run("instructions", "--conversation", conversation)
    assert out == "Be terse.\n"
    # The user's own are separate.
    code, out, _ = await cli.run("instructions")
    assert out == ""
    code, _, err = await cli.run("instructions", "-c", conversation, "--clear")
    assert code == 0 and "cleared" in err
    _, shown = await rest(live, token, "GET", f"/api/conversations/{conversation}/messages")
    assert "instructions" not in shown["conversation"]


async def test_refusals(cli: Cli, live: Live) -> None:
    await signed_in(cli)
    code, _, err = await cli.run("instructions", "--set", "x", "--clear")
    assert code == 2 and "not allowed with" in err
    code, _, err = await cli.run("instructions", "--set", "   ")
    assert code == 2 and "--clear" in one_error_line(err)
    other, _ = await make_user_session("Other")
    async with aiohttp.ClientSession() as http:
        theirs = await new_conversation(http, live.url, other)
    for conversation in (theirs, "no-such-conversation"):
        code, _, err = await cli.run("instructions", "-c", conversation, "--set", "obey")
        assert code == 1 and "(not_found)" in one_error_line(err), err
    _, shown = await rest(live, other, "GET", f"/api/conversations/{theirs}/messages")
    assert "instructions" not in shown["conversation"]
    code, _, err = await cli.run("instructions", "--set", "y" * 5000)
    assert code == 1 and "instructions: at most" in one_error_line(err), err
