"""``cero regenerate|edit|continue|branches|switch`` and the ``‹i/n›`` markers of ``cero
messages``, as subprocesses against a live server (docs/api.md, "Branches"; issue 23).

Every test here needs the server's branch endpoints (``POST …/messages/{id}/regenerate``,
``edit``, ``continue``, ``switch``, ``GET …/tree``): until they are merged, this module
fails as a whole (``404``). The parts that need no server are in
``test_cli_branch_units.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.client.cli_harness import (
    WAIT,
    Cli,
    messages,
    one_error_line,
    only_conversation,
    rest,
    signed_in,
    terminal,
)
from tests.conftest import Live

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the CLI's behaviour does not depend on the engine."""
    return f"sqlite:///{tmp_path_factory.mktemp('cli-branches') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """Demo answers of about two seconds, so a test can cancel one mid-way."""
    return {"demo_token_delay": 0.05}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def tree(live: Live, token: str, conversation: str) -> dict[str, Any]:
    status, body = await rest(live, token, "GET", f"/api/conversations/{conversation}/tree")
    assert status == 200, body
    return dict(body)


async def one_turn(cli: Cli, live: Live, token: str, text: str = "hi") -> str:
    code, _, err = await cli.run("chat", text)
    assert code == 0, err
    return await only_conversation(live, token)


async def test_regenerate_answers_the_last_message_again(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    conversation = await one_turn(cli, live, token, "say it twice")
    first = (await messages(live, token, conversation))[-1]
    code, out, err = await cli.run("regenerate", conversation)
    assert code == 0, err
    path = await messages(live, token, conversation)
    answer = path[-1]
    assert answer["id"] != first["id"] and answer["status"] == "complete"
    assert out == answer["content"] + "\n"  # streamed whole to stdout
    assert "say it twice" in out
    assert (answer["siblingIndex"], answer["siblingCount"]) == (1, 2)
    assert answer["siblingIds"] == [first["id"], answer["id"]]
    assert [m["role"] for m in path] == ["user", "assistant"]
    code, shown, err = await cli.run("messages", conversation)
    assert code == 0, err
    assert "demo ‹2/2›:\n" in shown and "you:\nsay it twice" in shown


async def test_regenerate_json_streams_the_events(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    conversation = await one_turn(cli, live, token)
    user = (await messages(live, token, conversation))[0]
    code, out, err = await cli.run("regenerate", conversation, user["id"][:8], "--json")
    assert code == 0, err
    events = [orjson.loads(line) for line in out.splitlines()]
    kinds = [e["type"] for e in events if e["type"] != "presence"]
    assert kinds[0] == "init" and kinds[-1] == "done", kinds  # no user `message` event
    assert events[0]["action"] == "regenerate" and events[0]["userMessageId"] == user["id"]
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == events[-1]["fullText"]


async def test_edit_reads_stdin_and_makes_a_branch(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    conversation = await one_turn(cli, live, token, "one")
    code, _, err = await cli.run("chat", "two", "-c", conversation)
    assert code == 0, err
    second = (await messages(live, token, conversation))[2]
    assert second["content"] == "two"
    code, out, err = await cli.run(
        "edit", conversation, second["id"][:8], "-", stdin=b"two, edited\n"
    )
    assert code == 0, err
    assert "You said: \u201ctwo, edited\u201d" in out
    path = await messages(live, token, conversation)
    assert [m["content"].strip() for m in path if m["role"] == "user"] == ["one", "two, edited"]
    edited = path[2]
    assert edited["parentId"] == second["parentId"]
    assert (edited["siblingIndex"], edited["siblingCount"]) == (1, 2)
    assert out == path[-1]["content"] + "\n"
    assert len((await tree(live, token, conversation))["messages"]) == 6
    answer = path[1]["id"]
    code, _, err = await cli.run("edit", conversation, answer, "not an answer")
    assert code == 1 and "is an answer" in one_error_line(err)


async def test_branches_draws_the_tree_and_switch_moves_the_active_path(
    cli: Cli, live: Live
) -> None:
    token = await signed_in(cli)
    conversation = await one_turn(cli, live, token)
    code, _, err = await cli.run("regenerate", conversation)
    assert code == 0, err
    whole = await tree(live, token, conversation)
    user, first, second = whole["messages"]
    code, out, err = await cli.run("branches", conversation)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith(f"* {user['id'][:8]}  you  hi")
    assert lines[1].startswith(f"  ├─ {first['id'][:8]}  demo ‹1/2›  ")
    assert lines[2].startswith(f"* └─ {second['id'][:8]}  demo ‹2/2›  ")
    code, out, err = await cli.run("branches", conversation, "--json")
    assert code == 0 and orjson.loads(out) == whole

    code, out, err = await cli.run("switch", conversation, first["id"][:8])
    assert code == 0, err
    lines = out.splitlines()  # the new active path
    assert len(lines) == 2 and lines[0] == f"{user['id'][:8]}  you  hi", out
    assert lines[1].startswith(f"{first['id'][:8]}  demo ‹1/2›  "), out
    assert (await tree(live, token, conversation))["activeLeafId"] == first["id"]
    assert [m["id"] for m in await messages(live, token, conversation)] == [
        user["id"],
        first["id"],
    ]
    code, out, err = await cli.run("switch", conversation, second["id"], "--json")
    assert code == 0 and orjson.loads(out) == {
        "activeLeafId": second["id"],
        "messageId": second["id"],
    }
    code, _, err = await cli.run("switch", conversation, "no-such-message")
    assert code == 1 and "no message 'no-such-message'" in one_error_line(err)


async def test_continue_finishes_a_cancelled_answer(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    chat = await cli.start("chat", "a long one to continue")
    assert chat.stdout is not None
    assert await asyncio.wait_for(chat.stdout.read(1), WAIT)
    conversation = await only_conversation(live, token)
    code, _, err = await cli.run("cancel", conversation)
    assert code == 0, err
    await asyncio.wait_for(chat.communicate(), WAIT)
    cut = (await messages(live, token, conversation))[-1]
    assert cut["status"] == "cancelled"

    code, out, err = await cli.run("continue", conversation)
    assert code == 0, err
    done = (await messages(live, token, conversation))[-1]
    assert done["id"] == cut["id"] and done["status"] == "complete"
    assert done["content"].startswith(cut["content"])
    assert out == done["content"] + "\n"  # the first token is the text so far: printed whole

    code, out, err = await cli.run("continue", conversation, cut["id"])
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "cannot be continued" in line and "(not_continuable)" in line


async def test_errors_are_one_line(cli: Cli, live: Live) -> None:
    await signed_in(cli)
    for command in (
        ["regenerate", "no-such-conversation"],
        ["continue", "no-such-conversation"],
        ["branches", "no-such-conversation"],
        ["switch", "no-such-conversation", "m"],
        ["edit", "no-such-conversation", "m", "text"],
    ):
        code, _, err = await cli.run(*command)
        assert code == 1 and "(not_found)" in one_error_line(err), (command, err)
    code, _, err = await cli.run("edit", "c", "m", " ")
    assert code == 2 and "the message is empty" in one_error_line(err)
