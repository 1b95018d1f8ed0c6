"""``cero-api studio``: the studio on ``127.0.0.1`` only, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import warnings
from collections.abc import Iterator

import structlog
import uvicorn

from server.storage import db
from server.studio.admin import create_studio
from server.studio.operators import OperatorError, operator_names, prepare

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"


async def run_studio(engine: db.Engine, *, port: int, write: bool) -> None:
    """Serve until SIGINT/SIGTERM. A port in use, or a database without the server's
    tables, raise :class:`OperatorError`."""
    sock = listen(port)  # first: a port in use stops it before anything is written
    try:
        await prepare(engine)
        operators = await operator_names()
        if not operators:
            log.warning(
                "studio_no_operators",
                hint="add one with `cero-api studio add-operator NAME`; nobody can sign in yet",
            )
        if write:
            log.warning(
                "studio_WRITABLE",
                message=(
                    "--write: the studio can CHANGE AND DELETE users, sessions, "
                    "conversations and messages; run it without --write to browse read-only"
                ),
            )
        # piccolo_api warns at every sign-in that cookies without ``Secure`` are for local
        # use: the studio is on a loopback port by design.
        warnings.filterwarnings("ignore", message=r"If running sessions in production")
        config = uvicorn.Config(
            create_studio(read_only=not write),
            host=HOST,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        await db.start_pool(engine, max_size=4)
        log.info(
            "studio_listening",
            url=f"http://{HOST}:{port}/",
            read_only=not write,
            operators=len(operators),
        )
        await _Server(config).serve(sockets=[sock])
    finally:
        sock.close()
        await db.close_pool(engine)
    log.info("studio_stopped")


class _Server(uvicorn.Server):
    """uvicorn's server whose SIGINT/SIGTERM end :meth:`serve` and return: uvicorn's own
    handlers raise the signal again once stopped, which kills the process before the
    database pool is closed and the stop is logged."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)


def listen(port: int) -> socket.socket:
    """The studio's socket, bound here so a port in use is one clear error (uvicorn's own
    bind would exit the process)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OperatorError(
            f"cannot listen on {HOST}:{port} (--port): {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(True)
    return sock
