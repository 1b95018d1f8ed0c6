"""``cero export`` and ``cero import`` as subprocesses against a live server
(docs/api.md, "Export and import"; docs/cli.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.client.cli_harness import (
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
    return f"sqlite:///{tmp_path_factory.mktemp('cli-export') / 'cero.db'}"


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


async def test_export_to_a_file_then_import_it(cli: Cli, live: Live, tmp_path: Path) -> None:
    token = await signed_in(cli)
    code, _, err = await cli.run("chat", "export me")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    target = tmp_path / "one.json"
    code, out, err = await cli.run("export", conversation, "-o", str(target))
    assert code == 0, err
    assert out == ""
    file: dict[str, Any] = orjson.loads(target.read_bytes())
    assert file["format"] == "cero-export"
    (exported,) = file["conversations"]
    assert exported["id"] == conversation
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".one.json.")]

    code, out, err = await cli.run("import", str(target))
    assert code == 0, err
    new_id, title, was = out.strip().split("  ")
    assert (title, was) == ("export me", f"(was {conversation})")
    imported = await messages(live, token, new_id)
    original = await messages(live, token, conversation)
    assert [m["content"] for m in imported] == [m["content"] for m in original]

    code, out, err = await cli.run("import", "-", "--json", stdin=target.read_bytes())
    assert code == 0, err
    assert orjson.loads(out)["conversations"][0]["importedFrom"] == conversation


async def test_export_markdown_and_the_whole_account(cli: Cli, live: Live) -> None:
    token = await signed_in(cli, "Grace")
    code, _, err = await cli.run("chat", "in markdown please")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    code, out, err = await cli.run("export", conversation, "--format", "markdown")
    assert code == 0, err
    assert out.startswith("# in markdown please\n")
    assert "**You**" in out and "**Assistant (demo)**" in out
    code, out, err = await cli.run("export")
    assert code == 0, err
    assert [c["id"] for c in orjson.loads(out)["conversations"]] == [conversation]


async def test_errors_are_one_line(cli: Cli, live: Live, tmp_path: Path) -> None:
    token = await signed_in(cli, "Linus")
    bad = tmp_path / "bad.json"
    bad.write_bytes(
        orjson.dumps(
            {
                "format": "cero-export",
                "version": 1,
                "conversations": [
                    {
                        "id": "c",
                        "shortTitle": "t",
                        "createdAt": "2026-11-01T12:00:00.000Z",
                        "updatedAt": "2026-11-01T12:00:00.000Z",
                        "messages": [
                            {
                                "id": "m",
                                "parentId": "x",
                                "role": "user",
                                "content": "hi",
                                "status": "complete",
                                "createdAt": "2026-11-01T12:00:00.000Z",
                            }
                        ],
                    }
                ],
            }
        )
    )
    code, _, err = await cli.run("import", str(bad))
    assert code == 1
    line = one_error_line(err)
    assert "conversations[0].messages[0].parentId: unknown message" in line
    assert "invalid_import" in line
    _, page = await rest(live, token, "GET", "/api/conversations")
    assert page["conversations"] == []
    code, _, err = await cli.run("export", "no-such-conversation", "-o", str(tmp_path / "x.json"))
    assert code == 1 and "not_found" in one_error_line(err)
    assert not (tmp_path / "x.json").exists()
    code, _, err = await cli.run("import", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in one_error_line(err)
