"""``cero-api serve`` (or any local HTTP server) in a child process, for tests.

One way to start a server the way production does and to stop it again::

    async with serve(database_url, cwd=tmp_path, env={"CERO_LOG_LEVEL": "warning"}) as server:
        ...  # server.url, server.ws_url, server.pid, server.proc, server.log()

    async with serve_many(3, database_url, cwd=tmp_path) as servers:
        ...  # three processes on one database, each on its own port

- **Start** on a free port with a hermetic environment: nothing of the caller's ``CERO_*``,
  ``BETTER_AUTH_*``, ``DATABASE_URL``, ``GEMINI_*``/``GOOGLE_*`` leaks in; ``env`` adds or,
  with ``None`` as the value, removes variables.
- **Ready** when ``GET /readyz`` answers 200 (``ready_path``; ``None`` does not wait). Between
  probes the helper waits on the process's exit, so a server that dies at start fails at
  once, with its log, instead of at the deadline.
- **Signals** by pid: :meth:`ServerProcess.signal` (SIGSTOP, SIGCONT...) and
  :meth:`ServerProcess.kill` (SIGKILL, awaited).
- **Stop** by pid: SIGCONT (a paused process handles SIGTERM only once continued), SIGTERM,
  then SIGKILL past ``stop_within`` seconds; :meth:`ServerProcess.stop` returns how it ended
  (code, seconds, whether it had to be killed).
- **Logs** (stdout and stderr) go to a file, never a pipe nobody reads (a full pipe blocks the
  server). A failure inside the block, or at start, carries the log's last lines as an
  exception note; :meth:`ServerProcess.log` reads it meanwhile and after the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.test_utils import unused_port

from tests.process_stats import METRICS_TOKEN

ROOT = Path(__file__).resolve().parent.parent
#: ``cero-api serve`` as this interpreter runs it (no console script needed).
CERO_API_SERVE = (sys.executable, "-m", "server.cli", "serve")
#: ``server.cli.SHUTDOWN_DEADLINE_S`` (15 s) plus slack for a loaded CI machine.
STOP_WITHIN = 25.0
#: How often readiness is probed; between probes the helper waits on the process's exit.
PROBE_EVERY = 0.05
LOG_TAIL_CHARS = 6000

_HERMETIC = ("CERO_", "BETTER_AUTH_", "DATABASE_URL", "GEMINI_", "GOOGLE_")

EnvChanges = Mapping[str, str | None]


def server_env(
    port: int, database_url: str | None, env: EnvChanges | None = None
) -> dict[str, str]:
    """The child's environment: the caller's without any server setting, this project on
    ``PYTHONPATH``, the port, the database (``None``: the server's default), a fixed secret,
    JSON logs; then ``env`` (a ``None`` value removes the variable)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(_HERMETIC)}
    out.update(
        PYTHONPATH=str(ROOT),
        CERO_PORT=str(port),
        BETTER_AUTH_SECRET="s" * 40,
        CERO_LOG_FORMAT="json",
        # SIGTERM ends running generations at once (server_shutdown), as before the drain
        # existed; a test of the drain itself sets CERO_DRAIN_TIMEOUT.
        CERO_DRAIN_TIMEOUT="0",
        # A test drives far more sends and sign-ins than a person does (see make_settings
        # in conftest).
        CERO_SENDS_PER_MINUTE="100000",
        CERO_SIGN_IN_LIMIT="100000",
        # /metrics on the API's listener answers to it (tests/process_stats.py scrapes).
        CERO_METRICS_TOKEN=METRICS_TOKEN,
    )
    if database_url is not None:
        out["DATABASE_URL"] = database_url
    for name, value in (env or {}).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Exit:
    """How a stopped process ended."""

    code: int
    seconds: float  # from the signal to the exit
    killed: bool  # it got SIGKILL: :meth:`ServerProcess.kill`, or it outlived its deadline


@dataclass
class ServerProcess:
    """One child process serving HTTP on ``url``."""

    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    url: str = field(init=False)
    exit: Exit | None = None
    _log_text: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT, SIGTERM...) if the process still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._log_text is not None:
            return self._log_text
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log()[-chars:]

    async def wait_ready(
        self, path: str = "/readyz", within: float = 30.0, status: int | None = 200
    ) -> None:
        """Until ``GET path`` answers ``status`` (``None``: any status). Fails at once,
        with the log, if the process exits first."""
        deadline = time.monotonic() + within
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                while True:
                    with contextlib.suppress(aiohttp.ClientConnectionError, TimeoutError):
                        async with http.get(self.url + path) as resp:
                            await resp.read()
                            if status is None or resp.status == status:
                                return
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(
                            f"{self.url}{path} did not answer {status or 'at all'} "
                            f"within {within:.0f} s"
                        )
                    # The probe interval, cut short by the process's exit.
                    await asyncio.wait([exited], timeout=min(PROBE_EVERY, left))
                    if exited.done():
                        raise AssertionError(
                            f"the server exited with {self.proc.returncode} before it was ready"
                        )
        finally:
            exited.cancel()

    async def stop(self, within: float = STOP_WITHIN) -> Exit:
        """SIGTERM, then SIGKILL if the process is still there after ``within`` seconds.
        Idempotent: a stopped process answers how it ended the first time."""
        if self.exit is not None:
            return self.exit
        started = time.monotonic()
        killed = False
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a stopped process hears SIGTERM
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                killed = True
                self.proc.kill()
        code = await self.proc.wait()
        self.exit = Exit(code, time.monotonic() - started, killed)
        return self.exit

    async def kill(self) -> Exit:
        """SIGKILL at once: a crash, as far as the server can tell."""
        if self.exit is not None:
            return self.exit
        started = time.monotonic()
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        code = await self.proc.wait()
        self.exit = Exit(code, time.monotonic() - started, killed=True)
        return self.exit

    def _keep_log(self) -> None:
        """Read the log into memory and remove its file."""
        if self._log_text is None:
            self._log_text = self.log_path.read_text(errors="replace")
            self.log_path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def run_server(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    cwd: Path | None = None,
    ready_path: str | None = "/readyz",
    ready_status: int | None = 200,
    ready_within: float = 30.0,
    stop_within: float = STOP_WITHIN,
    preexec_fn: Callable[[], None] | None = None,
) -> AsyncIterator[ServerProcess]:
    """Any local HTTP server listening on ``port``: started, awaited until ready, stopped at
    the end of the block (see the module's docstring)."""
    fd, log_name = tempfile.mkstemp(prefix=f"server-{port}-", suffix=".log")
    with os.fdopen(fd, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    server = ServerProcess(proc=proc, port=port, log_path=Path(log_name))
    try:
        if ready_path is not None:
            await server.wait_ready(ready_path, ready_within, ready_status)
        yield server
    except BaseException as exc:
        await server.stop(stop_within)
        server._keep_log()
        if not isinstance(exc, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
            exc.add_note(
                f"--- log of the server on {server.url} (pid {server.pid}, exit "
                f"{server.exit.code if server.exit else '?'}), last {LOG_TAIL_CHARS} chars:\n"
                + server.log_tail()
            )
        raise
    else:
        await server.stop(stop_within)
    finally:
        server._keep_log()


@contextlib.asynccontextmanager
async def serve(
    database_url: str | None,
    *,
    cwd: Path | None = None,
    env: EnvChanges | None = None,
    command: Sequence[str] = CERO_API_SERVE,
    port: int | None = None,
    ready_path: str | None = "/readyz",
    ready_within: float = 30.0,
    stop_within: float = STOP_WITHIN,
    preexec_fn: Callable[[], None] | None = None,
) -> AsyncIterator[ServerProcess]:
    """``cero-api serve`` on ``database_url`` (``None``: the server's default, a SQLite file
    in ``cwd``) on a free port; ``env`` as in :func:`server_env`."""
    port = port or unused_port()
    async with run_server(
        command,
        port=port,
        env=server_env(port, database_url, env),
        cwd=cwd,
        ready_path=ready_path,
        ready_within=ready_within,
        stop_within=stop_within,
        preexec_fn=preexec_fn,
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def serve_many(
    n: int,
    database_url: str,
    *,
    cwd: Path | None = None,
    env: EnvChanges | None = None,
    env_of: Callable[[int], EnvChanges] | None = None,
    ready_within: float = 30.0,
    stop_within: float = STOP_WITHIN,
) -> AsyncIterator[list[ServerProcess]]:
    """``n`` ``cero-api serve`` processes on one database, each on its own port. The first
    is ready (it applied the migrations) before the others start, together; ``env_of(i)``
    adds settings for the ``i``-th. All are stopped together at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(i: int) -> ServerProcess:
            changes = {**(env or {}), **(env_of(i) if env_of else {})}
            return await stack.enter_async_context(
                serve(
                    database_url,
                    cwd=cwd,
                    env=changes,
                    ready_within=ready_within,
                    stop_within=stop_within,
                )
            )

        servers = [await start(0)]
        # A TaskGroup: one failing start cancels the others (each stops what it started).
        async with asyncio.TaskGroup() as group:
            rest = [group.create_task(start(i)) for i in range(1, n)]
        servers += [task.result() for task in rest]
        try:
            yield servers
        finally:
            # Together, not one deadline after another.
            await asyncio.gather(*(s.stop(stop_within) for s in servers))
