"""``cero chat -i`` on a real terminal (a pseudo-terminal), against a live server (issue 25):
the prompt is prompt_toolkit's, so Up recalls the previous line and Enter sends it again,
the lines typed are kept in the history file (0600) for the next session (Up, Ctrl-R
search), Ctrl-C at the prompt drops the line and says how to leave, ``CERO_HISTORY=0``
and ``--no-history`` keep no file, and a turn sent from another device while a line is
being typed prints whole (the prompt is taken down, not drawn in the middle of the
answer) and leaves the typed line intact."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import stat
import struct
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.auth_helpers import bearer
from tests.client.cli_harness import WAIT, Cli, messages, rest, signed_in, terminal
from tests.conftest import Live

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

UP = b"\x1b[A"
END = "Gemini."  # the demo model's answer ends so
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('cli-repl-terminal') / 'cero.db'}"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """An answer of about a second: long enough to be printed while a line is typed."""
    return {"demo_token_delay": 0.03}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path) as running:
        yield running


class Terminal:
    """``python -m client ARGS`` with stdin, stdout and stderr on a pseudo-terminal of
    120x40; what it prints is collected from the master side as it comes."""

    def __init__(self, cli: Cli, *args: str, **env: str) -> None:
        self.cli, self.args, self.env = cli, args, env
        self.seen = bytearray()
        self.proc: asyncio.subprocess.Process | None = None
        self._master = -1
        self._more = asyncio.Event()

    async def __aenter__(self) -> Terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.set_blocking(master, False)
        self._master = master
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client",
            *self.args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=self.cli.env(TERM="xterm-256color", **self.env),
            start_new_session=True,
        )
        os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._read)
        return self

    def _read(self) -> None:
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the child closed its side
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self._master)
        self.seen += chunk
        self._more.set()

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        os.close(self._master)

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)

    async def expect(self, needle: bytes, after: int = 0) -> int:
        """Wait until ``needle`` was printed after offset ``after``; the offset after it."""
        try:
            async with asyncio.timeout(WAIT):
                while (at := self.seen.find(needle, after)) < 0:
                    self._more.clear()
                    await self._more.wait()
        except TimeoutError:
            raise AssertionError(f"no {needle!r} after {after}: {bytes(self.seen)!r}") from None
        return at + len(needle)

    async def prompt(self, after: int = 0) -> int:
        """Wait for the prompt drawn after ``after``."""
        return await self.expect("›".encode(), after)

    async def exit_code(self) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        with contextlib.suppress(asyncio.TimeoutError):  # the last bytes
            await asyncio.wait_for(self._more.wait(), 0.2)
        return code

    def text(self) -> str:
        """What was printed, escape sequences taken out."""
        return ANSI.sub(b"", bytes(self.seen)).decode(errors="replace")


async def user_lines(live: Live, token: str) -> list[str]:
    _, page = await rest(live, token, "GET", "/api/conversations")
    out: list[str] = []
    for conversation in reversed(page["conversations"]):
        stored = await messages(live, token, conversation["id"])
        out += [m["content"] for m in stored if m["role"] == "user"]
    return out


async def answered(live: Live, token: str, count: int) -> None:
    """Until ``count`` answers are complete on the server."""
    async with asyncio.timeout(WAIT):
        while True:
            _, page = await rest(live, token, "GET", "/api/conversations")
            done = 0
            for conversation in page["conversations"]:
                stored = await messages(live, token, conversation["id"])
                done += sum(
                    1 for m in stored if m["role"] == "assistant" and m["status"] == "complete"
                )
            if done >= count:
                return
            await asyncio.sleep(0.05)


def history_entries(path: Path) -> list[str]:
    """The lines of a prompt_toolkit history file (``+`` lines; one entry each here)."""
    return [line[1:] for line in path.read_text().splitlines() if line.startswith("+")]


async def test_up_recalls_the_last_line_and_history_is_kept(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    history = cli.config / "history"
    async with Terminal(cli, "chat", "-i") as term:
        at = await term.prompt()
        for n, line in enumerate((b"first line", b"second line"), 1):
            term.type(line + b"\r")
            await answered(live, token, n)
            at = await term.prompt(await term.expect(END.encode(), at))
        term.type(UP)  # the line before: "second line", in the prompt to edit or send
        at = await term.expect(b"second line", at)
        term.type(b"\r")
        await answered(live, token, 3)
        at = await term.prompt(await term.expect(END.encode(), at))
        term.type(b"\x04")  # Ctrl-D
        assert await term.exit_code() == 0, term.text()
    assert await user_lines(live, token) == ["first line", "second line", "second line"]
    assert history_entries(history) == ["first line", "second line"]  # a repeat is one entry
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "Traceback" not in term.text()

    # The next session recalls them: Up twice is "first line"; Ctrl-R finds "second line"
    # (Enter takes the match into the line, a second Enter sends it).
    async with Terminal(cli, "chat", "-C") as term:
        at = await term.prompt()
        term.type(UP + UP + b"\r")
        await answered(live, token, 4)
        at = await term.prompt(await term.expect(END.encode(), at))
        term.type(b"\x12sec")  # Ctrl-R
        at = await term.expect(b"(reverse-i-search)", at)
        at = await term.expect(b"ond line", at)  # "sec" highlighted
        term.type(b"\r\r")
        await answered(live, token, 5)
        await term.prompt(await term.expect(END.encode(), at))
        term.type(b"\x04")
        assert await term.exit_code() == 0, term.text()
    assert (await user_lines(live, token))[-2:] == ["first line", "second line"]


async def test_ctrl_c_at_the_prompt_drops_the_line(cli: Cli, live: Live, tmp_path: Path) -> None:
    token = await signed_in(cli)
    history = tmp_path / "elsewhere" / "typed"
    async with Terminal(cli, "chat", "-i", CERO_HISTORY_FILE=str(history)) as term:
        at = await term.prompt()
        term.type(b"never sent")
        at = await term.expect(b"never sent", at)
        term.type(b"\x03")  # Ctrl-C: a key at the prompt
        at = await term.prompt(await term.expect(b"(Ctrl-D or /exit leaves)", at))
        term.type(b"sent\r")
        await answered(live, token, 1)
        await term.prompt(await term.expect(END.encode(), at))
        term.type(b"/exit\r")
        assert await term.exit_code() == 0, term.text()
    assert await user_lines(live, token) == ["sent"]
    assert history_entries(history) == ["sent", "/exit"]
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert not (cli.config / "history").exists()


async def test_no_history_file_when_turned_off(cli: Cli, live: Live) -> None:
    token = await signed_in(cli)
    for how in ({"CERO_HISTORY": "0"}, {"args": "--no-history"}):
        args = ("chat", "-i", *([how["args"]] if "args" in how else []))
        env = {k: v for k, v in how.items() if k != "args"}
        async with Terminal(cli, *args, **env) as term:
            at = await term.prompt()
            term.type(b"only here\r")
            await term.prompt(await term.expect(END.encode(), at))
            term.type(UP + b" again\r")  # this session's lines are still recalled
            at = await term.expect(b"only here again", at)
            await term.prompt(await term.expect(END.encode(), at))
            term.type(b"\x04")
            assert await term.exit_code() == 0, term.text()
    assert await user_lines(live, token) == ["only here", "only here again"] * 2
    assert not (cli.config / "history").exists()


async def test_another_devices_turn_prints_whole_and_the_typed_line_stays(
    cli: Cli, live: Live
) -> None:
    token = await signed_in(cli)
    async with Terminal(cli, "chat", "-i", "--no-history") as term:
        at = await term.prompt()
        term.type(b"mine\r")
        await answered(live, token, 1)
        at = await term.prompt(await term.expect(END.encode(), at))
        (conversation,) = await conversation_ids(live, token)
        term.type(b"half typed")
        at = await term.expect(b"half typed", at)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                live.url + "/api/chat",
                json={"message": "from my phone", "conversationId": conversation},
                headers={**bearer(token), "Accept": "text/event-stream"},
            ) as resp:
                assert resp.status == 200
                mid = False
                async for _ in resp.content.iter_any():  # type while it streams
                    if not mid:
                        term.type(b" and")
                        mid = True
        stored = await messages(live, token, conversation)
        theirs = stored[-1]["content"]
        assert theirs.endswith(END)
        at = await term.prompt(await term.expect(END.encode() + b"\r\n", at))
        term.type(b" finished\r")
        await answered(live, token, 3)
        await term.prompt(await term.expect(END.encode(), at))
        term.type(b"\x04")
        assert await term.exit_code() == 0, term.text()
    # Printed in one piece: no prompt drawn (nor keys echoed) inside the other answer.
    printed = bytes(term.seen).decode(errors="replace").replace("\r\n", "\n")
    assert "> from my phone\n" in printed
    assert theirs + "\n" in printed
    mine = [m["content"] for m in await messages(live, token, conversation) if m["role"] == "user"]
    assert mine == ["mine", "from my phone", "half typed and finished"]


async def conversation_ids(live: Live, token: str) -> list[str]:
    _, page = await rest(live, token, "GET", "/api/conversations")
    return [str(c["id"]) for c in page["conversations"]]
