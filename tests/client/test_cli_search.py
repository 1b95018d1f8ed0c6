"""``cero search TEXT [--limit N] [--json]`` as a subprocess against a live server
(docs/cli.md; docs/api.md, "Search")."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from client.search import result_lines
from tests.client.cli_harness import Cli, only_conversation, signed_in, terminal
from tests.conftest import Live

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the CLI's behaviour does not depend on the engine."""
    return f"sqlite:///{tmp_path_factory.mktemp('cli-search') / 'cero.db'}"


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


def _word() -> str:
    return "w" + "".join(secrets.choice("abcdefghijklmnopqrstuvxyz") for _ in range(10))


async def test_search_prints_each_result_and_follows_pages(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    word = _word()
    code, _, err = await cli.run("chat", f"where is the {word} kept")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    code, out, err = await cli.run("search", word)
    assert code == 0, err
    lines = out.splitlines()
    # The message, its demo answer (which quotes it) and the title: two lines each.
    assert len(lines) == 6, out
    assert all(line.startswith(conversation) for line in lines[0::2]), out
    assert all(f"«{word}»" in line for line in lines[1::2]), out
    assert any("(you)" in line for line in lines) and any("title" in line for line in lines)
    # --json: one result a line, as the server sent it; --limit across pages of the server.
    code, out, err = await cli.run("search", word, "--json", "--limit", "2")
    assert code == 0, err
    results = [orjson.loads(line) for line in out.splitlines()]
    assert len(results) == 2 and all(r["conversationId"] == conversation for r in results)
    code, out, err = await cli.run("search", word, "--json")
    assert code == 0 and len(out.splitlines()) == 3, (out, err)


async def test_nothing_found_and_bad_text(cli: Cli, live: Live) -> None:
    await signed_in(cli, "Nobody")
    code, out, err = await cli.run("search", _word())
    assert (code, out) == (0, "") and "Nothing found" in err, err
    code, out, err = await cli.run("search", "   ")
    assert code == 2 and out == "", err
    code, _, err = await cli.run("search", "x" * 201)
    assert code == 1 and "q:" in err, err


async def test_result_lines_mark_an_answer_off_the_active_branch() -> None:
    first, second = result_lines(
        {
            "kind": "message",
            "conversationId": "C1",
            "conversationTitle": "Title",
            "messageId": "M1",
            "role": "assistant",
            "snippet": "a «word»\nb",
            "createdAt": "2026-12-07T09:00:00.000Z",
            "onActivePath": False,
        }
    )
    assert first == "C1  Title  ·  message M1 (assistant) off-branch  ·  2026-12-07T09:00"
    assert second == "    a «word» b"
