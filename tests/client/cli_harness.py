"""Running the ``cero`` console script as a subprocess against a live server, for the
live CLI tests (``test_cli.py``, ``test_cli_branches.py``).

Each :class:`Cli` is one user's terminal: its own HOME and config folder (a tmp dir,
``XDG_CONFIG_HOME``) and the null keyring, so tokens go to the 0600 file. ``PYTHONPATH``
is this checkout, so the script runs this tree's ``client`` package even when the venv's
editable install points at another checkout.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from client.credentials import CredentialStore
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live

CERO = Path(sys.executable).with_name("cero")
ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0


@dataclass
class Cli:
    """One user's terminal: its own HOME and config folder."""

    home: Path
    url: str
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.home / ".config" / "cero"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "XDG_"))}
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            PYTHONPATH=str(ROOT),
            PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
            CERO_API_URL=self.url,
        )
        env.update(extra)
        return env

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(CERO),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(**env),
        )
        self.procs.append(proc)
        return proc

    async def run(self, *args: str, stdin: bytes = b"", **env: str) -> tuple[int, str, str]:
        proc = await self.start(*args, **env)
        out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    def save_token(self, token: str, name: str = "Ada") -> None:
        CredentialStore(self.config, "file").save(self.url, token, {"name": name})


@asynccontextmanager
async def terminal(live: Live, home: Path) -> AsyncIterator[Cli]:
    """A :class:`Cli` for ``live``; its processes still running at the end are killed."""
    cli = Cli(home, live.url)
    try:
        yield cli
    finally:
        for proc in cli.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def signed_in(cli: Cli, name: str = "Ada") -> str:
    token, _ = await make_user_session(name)
    cli.save_token(token, name)
    return token


async def rest(live: Live, token: str, method: str, path: str, **kw: Any) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, live.url + path, headers=bearer(token), **kw) as resp:
            return resp.status, await resp.json()


async def only_conversation(live: Live, token: str) -> str:
    _, page = await rest(live, token, "GET", "/api/conversations")
    (conversation,) = page["conversations"]
    return str(conversation["id"])


async def messages(live: Live, token: str, conversation: str) -> list[dict[str, Any]]:
    _, body = await rest(live, token, "GET", f"/api/conversations/{conversation}/messages")
    return list(body["messages"])


async def read_until(stream: asyncio.StreamReader, needle: bytes, seen: bytearray) -> None:
    """Read ``stream`` into ``seen`` until it holds ``needle``."""
    while needle not in seen:
        chunk = await asyncio.wait_for(stream.read(4096), WAIT)
        assert chunk, f"EOF before {needle!r}; got {bytes(seen)!r}"
        seen += chunk


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cero: error: "), err
    return lines[0]


class Proxy:
    """A TCP relay the test can cut: every open connection is aborted by :meth:`drop`;
    :meth:`hold` stops relaying (new connections wait too) until :meth:`release`;
    ``garble`` replaces a request's ``Last-Event-ID`` with one the server cannot replay."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.garble = False
        self._open = asyncio.Event()
        self._open.set()
        self.heads: list[bytes] = []
        self.answered: asyncio.Queue[bytes] = asyncio.Queue()  # request lines, once answered
        self.accepted = asyncio.Event()  # a connection came (held or not)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()

    def drop(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def refuse(self) -> None:
        """Like a server killed: open connections cut, new ones refused."""
        if self._server is not None:
            self._server.close()
        self.drop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        await self._open.wait()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        head = await reader.readuntil(b"\r\n\r\n")
        if self.garble:
            head = re.sub(rb"(?im)^(last-event-id): [^\r]*", rb"\1: garbage", head)
        self.heads.append(head)
        up_writer.write(head)
        await asyncio.gather(
            self._pipe(reader, up_writer, None),
            self._pipe(up_reader, writer, head.split(b"\r\n", 1)[0]),
            return_exceptions=True,
        )

    async def next_answer(self, path: bytes) -> None:
        """Wait until a request for ``path`` has been answered (its first bytes relayed)."""
        while path not in await asyncio.wait_for(self.answered.get(), WAIT):
            pass

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes | None
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._open.wait()
                writer.write(chunk)
                if request is not None:
                    self.answered.put_nowait(request)
                    request = None
        finally:
            writer.transport.abort()
