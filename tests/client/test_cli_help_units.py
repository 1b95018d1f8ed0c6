"""The CLI's pieces without a server: ``--help`` examples, the completion scripts (bash's
run by bash), ``--server`` without a scheme, server hints rewritten to commands, network
errors in words, presence lines, the interactive mode's commands."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from client.api import Api, error_text
from client.completion import script, spec_of
from client.context import normalize_server
from client.errors import CliError
from client.examples import EXAMPLES
from client.follow import Follower
from client.friendly import cli_hints, command_for, network_reason
from client.main import parser
from client.output import Output
from client.repl import is_command
from client.sse import ServerSentEvent
from tests.client.cli_harness import CERO, ROOT


def commands() -> list[str]:
    return [c.name for c in spec_of(parser()).commands]


@pytest.mark.parametrize("command", commands())
def test_every_command_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    examples = text.split("examples:\n", 1)[1]
    assert examples.startswith("  ")
    for example, _ in EXAMPLES[command]:
        assert example in examples  # as written (RawDescriptionHelpFormatter)


def test_examples_name_only_real_commands() -> None:
    assert set(EXAMPLES) == set(commands())
    top = parser().format_help()
    assert "examples:" in top and "130 Ctrl-C" in top


# -- completion ------------------------------------------------------------------------------


def complete_bash(line: str) -> list[str]:
    """What bash completes for ``line`` (the cursor at its end) with ``cero completion bash``."""
    words = line.split(" ")
    program = (
        script("bash", parser())
        + f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        + f"COMP_CWORD={len(words) - 1}\n"
        + '_cero\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [w for w in done.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_flags_and_choices() -> None:
    assert complete_bash("cero ch") == ["chat"]
    assert set(complete_bash("cero re")) == {"regenerate", "rename"}
    assert complete_bash("cero --server 127.0.0.1:3201 wat") == ["watch"]
    assert complete_bash("cero chat --to") == ["--tool"]
    assert complete_bash("cero chat -t ") == ["google_search", "url_context", "code_execution"]
    assert complete_bash("cero watch --acc") == ["--account"]
    assert complete_bash("cero completion ") == ["bash", "zsh", "fish"]
    assert complete_bash("cero delete --y") == ["--yes"]
    assert complete_bash("cero export --format m") == ["markdown"]
    assert complete_bash("cero chat --model ") == []  # a free value
    assert complete_bash("cero chat --det") == ["--detach-on-interrupt"]
    assert complete_bash("cero chat --no-h") == ["--no-history"]
    assert set(complete_bash("cero chat --contin")) == {"--continue", "--continue-last"}
    assert complete_bash("cero regenerate --det") == ["--detach-on-interrupt"]


def test_zsh_and_fish_scripts_name_every_command_and_flag() -> None:
    zsh, fish = script("zsh", parser()), script("fish", parser())
    assert zsh.startswith("#compdef cero") and "compdef _cero cero" in zsh
    assert "':file:_files'" not in zsh and "'--output[" in zsh
    assert "'--tool[a tool (repeatable)]:value:(google_search url_context code_execution)'" in zsh
    for name in commands():
        assert f"    '{name}:" in zsh and f"        {name})" in zsh
        assert f"-a {name} -d " in fish
    assert "complete -c cero -n '__fish_seen_subcommand_from watch' -l account" in fish
    for flag in ("detach-on-interrupt", "no-history", "continue"):
        assert f"complete -c cero -n '__fish_seen_subcommand_from chat' -l {flag}" in fish
        assert f"'--{flag}[" in zsh
    for line in zsh.splitlines():
        assert line.count("'") % 2 == 0, line  # every quoted spec closed on its line


def test_completion_command_prints_the_script() -> None:
    """As a subprocess: ``main()`` in-process would configure structlog for every later test."""
    done = subprocess.run(
        [str(CERO), "completion", "bash"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == script("bash", parser())


# -- --server --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:3201", "http://127.0.0.1:3201"),
        ("localhost:3001", "http://localhost:3001"),
        ("localhost", "http://localhost"),
        ("[::1]:3001", "http://[::1]:3001"),
        ("::1", "http://[::1]"),
        ("cero.example", "https://cero.example"),
        ("cero.example:8443/", "https://cero.example:8443"),
        ("localhost.evil.example", "https://localhost.evil.example"),
        ("127.evil.example", "https://127.evil.example"),
        ("http://cero.example/", "http://cero.example"),
        ("HTTPS://cero.example", "https://cero.example"),
    ],
)
def test_server_without_a_scheme(given: str, url: str) -> None:
    assert normalize_server(given) == url


@pytest.mark.parametrize("given", ["ftp://cero.example", "", "http://"])
def test_server_refused(given: str) -> None:
    with pytest.raises(CliError) as raised:
        normalize_server(given)
    assert raised.value.code == 2


# -- error text ------------------------------------------------------------------------------


def test_server_hints_name_cli_commands() -> None:
    text = "aiModel: unknown model 'x'; see GET /api/models for the list"
    assert cli_hints(text) == "aiModel: unknown model 'x'; run `cero models` for the list"
    assert command_for("GET", "/api/conversations/abc/messages") == "cero messages ID"
    assert cli_hints("see POST /api/unknown/thing") == "see POST /api/unknown/thing"
    body = orjson.dumps({"error": text, "code": "unknown_model"})
    refused = Api("http://x", "t").refused(400, body)
    assert refused.message == (
        "aiModel: unknown model 'x'; run `cero models` for the list (unknown_model)"
    )
    assert error_text(400, body)[0] == text  # the server's own text is not changed


class _Key:
    host, port, ssl = "127.0.0.1", 3201, False


def test_network_errors_in_words() -> None:
    refused = aiohttp.ClientConnectorError(_Key(), ConnectionRefusedError(111, "refused"))  # type: ignore[arg-type]
    assert network_reason(refused) == "connection refused"
    payload = aiohttp.ClientPayloadError(
        "Response payload is not completed: <TransferEncodingError: 400, message='Not enough "
        "data for satisfy transfer length header.'>"
    )
    assert network_reason(payload) == "the server closed the connection mid-response"
    assert network_reason(aiohttp.ServerDisconnectedError()) == "the server closed the connection"
    assert network_reason(TimeoutError()) == "the server stopped answering (timed out)"
    assert network_reason(ConnectionResetError(104, "x")) == "the connection was reset"


# -- presence --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_presence_only_when_someone_else_watches_and_not_repeated() -> None:
    err = _Terminal()
    follower = Follower(Api("http://x"), Output(io.BytesIO(), err), "watch")
    for viewers in (1, 2, 2, 1, 1, 2, 3, 3):
        data: dict[str, Any] = {"type": "presence", "epoch": "e", "viewers": viewers}
        data["seq"] = follower.seq + 1
        await follower.handle(ServerSentEvent("presence", orjson.dumps(data).decode(), ""))
    assert err.getvalue() == "(2 watching)\n(no one else watching)\n(2 watching)\n(3 watching)\n"


# -- the interactive mode --------------------------------------------------------------------


def test_what_counts_as_a_command() -> None:
    assert is_command("/new") and is_command("/model demo") and is_command(" /help ")
    assert is_command("/bogus")  # said to be unknown
    assert not is_command("/etc/hosts: what is it?")
    assert not is_command("/usr/bin is where")
    assert not is_command("hello /new")


def test_chat_interactive_flag() -> None:
    args = parser().parse_args(["chat", "-i"])
    assert isinstance(args, argparse.Namespace) and args.interactive and args.message is None
    assert not args.no_history and not args.detach_on_interrupt
    args = parser().parse_args(["chat", "-i", "--no-history", "-d"])
    assert args.no_history and args.detach_on_interrupt


def test_chat_continue_is_continue_last() -> None:
    for flag in ("--continue", "--continue-last", "-C"):
        args = parser().parse_args(["chat", flag, "and then?"])
        assert args.continue_last and args.message == "and then?" and args.conversation is None


async def test_presence_waits_for_the_end_of_an_answer_line() -> None:
    err, out = _Terminal(), io.BytesIO()
    follower = Follower(Api("http://x"), Output(out, err), "watch")
    events: list[dict[str, Any]] = [
        {"type": "init", "messageId": "m", "generationId": "g"},
        {"type": "token", "messageId": "m", "text": "half an"},
        {"type": "presence", "viewers": 2},
        {"type": "token", "messageId": "m", "text": " answer"},
    ]
    for seq, data in enumerate(events, 1):
        data.update(epoch="e", seq=seq)
        await follower.handle(ServerSentEvent(data["type"], orjson.dumps(data).decode(), ""))
    assert err.getvalue() == ""  # not in the middle of the answer's line
    done: dict[str, Any] = {"type": "done", "messageId": "m", "fullText": "half an answer"}
    done.update(epoch="e", seq=9)
    await follower.handle(ServerSentEvent("done", orjson.dumps(done).decode(), ""))
    assert out.getvalue() == b"half an answer\n" and err.getvalue() == "(2 watching)\n"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh")
def test_zsh_script_parses(tmp_path: Path) -> None:
    path = tmp_path / "_cero"
    path.write_text(script("zsh", parser()))
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=10)


@pytest.mark.skipif(shutil.which("fish") is None, reason="no fish")
def test_fish_script_completes(tmp_path: Path) -> None:
    path = tmp_path / "cero.fish"
    path.write_text(script("fish", parser()))

    def complete(line: str) -> list[str]:
        done = subprocess.run(
            ["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert complete("cero ch") == ["chat"]
    assert complete("cero chat -t ") == ["code_execution", "google_search", "url_context"]
    assert complete("cero completion ") == ["bash", "fish", "zsh"]
    assert complete("cero watch --acc") == ["--account"]
