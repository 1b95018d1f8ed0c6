"""``cero-api serve [--port P] [--host H] | migrate | check-config | sign-in-link | studio``.

Start-up errors (a bad setting, an unreachable database, a port in use) end in one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import web

from server.auth import local
from server.auth.redirects import safe_path
from server.core.config import ConfigError, Settings, load_settings
from server.limits.connection_guard import connection_capacity, raise_nofile_limit
from server.ops.gc_tuning import freeze_startup_heap, meter_pauses
from server.ops.log_output import drain_all
from server.ops.logging import configure_logging
from server.ops.memory import start_memory_returner
from server.storage import db
from server.studio import DEFAULT_PORT, MIN_PASSWORD_LENGTH

log = structlog.get_logger("cero.cli")

SHUTDOWN_TIMEOUT_S = 10.0
#: The process is gone this long after SIGTERM/SIGINT at the latest, whatever hangs:
#: handlers get ``SHUTDOWN_TIMEOUT_S``, closing the database and threads the rest.
SHUTDOWN_DEADLINE_S = SHUTDOWN_TIMEOUT_S + 5.0
#: How long a forced exit waits for queued log lines.
FORCED_EXIT_FLUSH_S = 0.5


class StartupError(Exception):
    """One line for the operator."""


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"cero-api: {message}\n")
    sys.stderr.flush()
    return code


def _describe_db_error(settings: Settings, exc: BaseException) -> str:
    target = "SQLite file" if settings.is_sqlite else "PostgreSQL"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot use the database (DATABASE_URL, {target}): {type(exc).__name__}: {text}"


async def _serve(settings: Settings) -> None:
    from server.app import create_app
    from server.core.app_keys import REGISTRY
    from server.http.protocol import make_runner
    from server.ops.metrics import METRICS

    nofile = raise_nofile_limit()
    capacity = connection_capacity(
        settings.max_connections, nofile.soft, settings.fd_headroom, settings.connection_reserve
    )
    if capacity < settings.max_connections:
        log.warning(
            "max_connections_lowered",
            configured=settings.max_connections,
            effective=capacity,
            nofile=nofile.soft,
            fd_headroom=settings.fd_headroom,
        )
    app = create_app(settings)
    runner = make_runner(
        app,
        settings,
        max_connections=capacity,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=None,
    )
    try:
        await runner.setup()
    except Exception as exc:
        raise StartupError(_describe_db_error(settings, exc)) from None
    # Signals are taken from before the port opens: a SIGTERM that comes once /readyz
    # answers, while start-up still finishes (the sign-in link is written to the
    # database), is a clean shutdown after it, never the default kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port} (CERO_HOST/CERO_PORT): "
            f"{exc.strerror or exc}"
        ) from None
    metrics_runner = await _metrics_listener(app, settings, runner)
    log.info(
        "listening",
        url=settings.public_url,
        database=settings.database_url.split("://")[0],
        cluster=settings.cluster_mode,
        max_connections=capacity,
        nofile=nofile.soft,
        nofile_before=nofile.before,
    )
    await local.announce(app)
    freeze_startup_heap()
    metrics = app[METRICS]
    meter_pauses(lambda generation, seconds: metrics.gc_pauses.labels(generation).observe(seconds))
    returner = start_memory_returner(settings.malloc_trim_interval)
    await stop.wait()
    # From the first signal on, a thread guarantees the exit: it fires whatever the event
    # loop is doing (stopped, stuck in a task, or blocked in a write).
    watchdog = _exit_watchdog(settings.drain_timeout + SHUTDOWN_DEADLINE_S)
    # Deploys cut no answer: /readyz answers 503 and new generations are refused at once;
    # running ones get CERO_DRAIN_TIMEOUT to finish, then cleanup ends the rest
    # (server_shutdown, stored interrupted with their text) and closes sockets with 1001.
    registry = app[REGISTRY]
    log.info(
        "draining",
        generations=len(registry.running_generations()),
        timeout=settings.drain_timeout,
    )
    stop.clear()  # a second signal cuts the drain short
    draining = asyncio.ensure_future(registry.drain(settings.drain_timeout))
    again = asyncio.ensure_future(stop.wait())
    await asyncio.wait([draining, again], return_when=asyncio.FIRST_COMPLETED)
    again.cancel()
    draining.cancel()
    unfinished = len([t for t in registry.running_generations() if not t.done()])
    log.info("shutting_down", unfinished=unfinished)
    try:
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_DEADLINE_S - 1.0)
    except TimeoutError:
        log.error("shutdown_incomplete", seconds=SHUTDOWN_DEADLINE_S - 1.0)
        watchdog.clean = False
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    if returner is not None:
        returner.stop()
    log.info("stopped")


async def _metrics_listener(
    app: web.Application, settings: Settings, runner: web.AppRunner
) -> web.AppRunner | None:
    """The metrics listener (``CERO_METRICS_ADDRESS``) when one is set."""
    from server.http.metrics_listener import start_metrics_listener
    from server.ops.metrics import METRICS

    listen = settings.metrics_listen
    if listen is None:
        if settings.metrics_token is None:
            log.info("metrics_off", hint="set CERO_METRICS_ADDRESS or CERO_METRICS_TOKEN")
        return None
    try:
        return await start_metrics_listener(app[METRICS], *listen)
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {settings.metrics_address} (CERO_METRICS_ADDRESS): "
            f"{exc.strerror or exc}"
        ) from None


class _Watchdog(threading.Thread):
    """The last resort of a stop, started by the first SIGTERM/SIGINT: after ``deadline``
    seconds (the drain's time plus :data:`SHUTDOWN_DEADLINE_S`) it ends the process with
    ``os._exit``, even once the event loop has stopped (an exception out of the shutdown
    path leaves ``asyncio.Runner.close`` waiting for tasks that never finish). Threads
    that are not daemons (an aiosqlite connection a failed query never closed, an executor
    thread blocked in the database) would otherwise keep the interpreter in
    ``threading._shutdown`` forever after ``stopped``. A daemon itself, it
    dies quietly with a process that exits in time."""

    def __init__(self, deadline: float) -> None:
        super().__init__(name="shutdown-watchdog", daemon=True)
        self.deadline = deadline
        self.clean = True

    def run(self) -> None:
        time.sleep(self.deadline)
        # Nothing here may stop the exit: not a log line, not a flush (a pipe whose reader
        # is gone raises; one whose reader stopped blocks, hence drain's bound).
        with contextlib.suppress(Exception):
            stuck = [t.name for t in threading.enumerate() if not t.daemon and t is not self]
            log.error("shutdown_forced", seconds=self.deadline, threads=stuck[:20])
            drain_all(FORCED_EXIT_FLUSH_S)
        os._exit(0 if self.clean else 1)


def _exit_watchdog(deadline: float) -> _Watchdog:
    watchdog = _Watchdog(deadline)
    watchdog.start()
    return watchdog


async def _migrate(settings: Settings) -> list[str]:
    engine = db.bound_engine()
    try:
        return await db.migrate(engine)
    except Exception as exc:
        raise StartupError(_describe_db_error(settings, exc)) from None


async def _sign_in_link(settings: Settings, next_path: str | None) -> str:
    """A new single-use link in the database the server uses (``DATABASE_URL``)."""
    try:
        token = await local.issue_link(settings.local_link_ttl)
    except Exception as exc:
        raise StartupError(
            _describe_db_error(settings, exc)
            + " (start the server, or run `cero-api migrate`, first)"
        ) from None
    log.info(
        "local_sign_in_link_issued",
        url=f"{settings.public_url}/auth/local",
        expires_in=settings.local_link_ttl,
    )
    return local.link_url(settings, token, next_path)


async def _studio(settings: Settings, args: argparse.Namespace) -> int:
    """``cero-api studio [--port P] [--write]`` and ``cero-api studio add-operator NAME``."""
    from server.studio import operators
    from server.studio.serve import run_studio

    engine = db.bound_engine()
    if args.studio_command == "add-operator":
        try:
            operators.check_name(args.name)
            password = _read_password(args.password_stdin)
            operators.check_password(password)
            await operators.prepare(engine)
            created = await operators.add_operator(args.name, password)
        except operators.OperatorError as exc:
            return _fail(str(exc))
        except Exception as exc:
            raise StartupError(_describe_db_error(settings, exc)) from None
        finally:
            await db.close_pool(engine)
        verb = "added" if created else "has a new password (its studio sign-ins ended)"
        sys.stdout.write(f"operator {args.name.strip()} {verb}\n")
        return 0
    try:
        await run_studio(engine, port=args.port, write=args.write)
    except operators.OperatorError as exc:
        return _fail(str(exc))
    except Exception as exc:
        raise StartupError(_describe_db_error(settings, exc)) from None
    return 0


def _read_password(from_stdin: bool) -> str:
    """One line of stdin (``--password-stdin``), or typed twice at a terminal."""
    from server.studio.operators import OperatorError

    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise OperatorError("no terminal to ask for the password: pass --password-stdin")
    first = getpass.getpass("Operator password: ")
    if getpass.getpass("Again: ") != first:
        raise OperatorError("the passwords differ")
    return first


def _studio_parser(sub: Any) -> None:
    studio = sub.add_parser(
        "studio",
        help="browse the database in piccolo-admin on 127.0.0.1 (operators only)",
        description=(
            "Serve the database studio (piccolo-admin) on 127.0.0.1 against the server's "
            "database (DATABASE_URL): users, sessions, conversations and messages, "
            "read-only unless --write. Sign in with an operator made by "
            "`cero-api studio add-operator NAME`."
        ),
    )
    studio.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 ({DEFAULT_PORT})"
    )
    studio.add_argument(
        "--write", action="store_true", help="allow edits and deletes (read-only without it)"
    )
    commands = studio.add_subparsers(dest="studio_command")
    add = commands.add_parser(
        "add-operator",
        help="create a studio operator, or set a new password for one",
        description=(
            "Create an operator who can sign in to the studio (not an app user), or set a "
            "new password for an existing one (which ends its studio sign-ins). The "
            f"password ({MIN_PASSWORD_LENGTH}+ characters) is asked twice, or read "
            "from one line of stdin with --password-stdin."
        ),
    )
    add.add_argument("name", help="the operator's sign-in name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cero-api", description="Cero API server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="apply migrations and serve HTTP/SSE/WebSocket")
    serve.add_argument("--port", type=int, help="listen on this port (overrides CERO_PORT)")
    serve.add_argument("--host", help="listen on this address (overrides CERO_HOST)")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("check-config", help="validate the settings and exit")
    link = sub.add_parser(
        "sign-in-link",
        help="local mode: print a new single-use sign-in link for the running server",
        description=(
            "Print a new single-use sign-in link (local mode) that the server using the "
            "same DATABASE_URL accepts: run it in the server's directory, with its "
            "settings. Pass the server's --port/--host if it was started with them."
        ),
    )
    link.add_argument("--port", type=int, help="the server's port (overrides CERO_PORT)")
    link.add_argument("--host", help="the server's address (overrides CERO_HOST)")
    link.add_argument("--next", dest="next_path", help="a path to open after signing in")
    _studio_parser(sub)
    args = parser.parse_args(argv)
    # Piccolo reports connection trouble as coloured warnings; we report it in one line.
    warnings.filterwarnings("ignore", message=r".*Unable to (connect|fetch)")

    overrides: dict[str, Any] = {}
    if args.command in ("serve", "sign-in-link"):
        # One process per port in a cluster: `cero-api serve --port 3002`.
        overrides = {
            name: value
            for name, value in (("port", args.port), ("host", args.host))
            if value is not None
        }
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(settings.log_level, settings.log_format)

    try:
        if args.command == "check-config":
            sys.stdout.write(
                f"configuration ok: {settings.public_url} ({settings.database_url.split('://')[0]})\n"
            )
            return 0
        db.bind(
            settings.database_url, lock_timeout=db.lock_timeout(settings)
        )  # once, for the whole process
        if args.command == "sign-in-link":
            if not settings.local_mode:
                return _fail(
                    "local sign-in is off: the server is not in local mode (GitHub sign-in "
                    "is configured, or CERO_HOST is not a loopback address)"
                )
            if settings.is_sqlite and not settings.sqlite_path.exists():
                return _fail(
                    f"no database at {settings.sqlite_path} (DATABASE_URL): run this where "
                    "the server runs, with its settings"
                )
            next_path = safe_path(args.next_path)
            if args.next_path and next_path is None:
                return _fail("--next must be a path on this server, such as /app")
            sys.stdout.write(asyncio.run(_sign_in_link(settings, next_path)) + "\n")
            sys.stdout.flush()
            return 0
        if args.command == "studio":
            if settings.is_sqlite and not settings.sqlite_path.exists():
                return _fail(
                    f"no database at {settings.sqlite_path} (DATABASE_URL): run this where "
                    "the server runs, with its settings"
                )
            return asyncio.run(_studio(settings, args))
        if args.command == "migrate":
            applied = asyncio.run(_migrate(settings))
            log.info("migrate_done", applied=len(applied))
            return 0
        _run(_serve(settings))
        return 0
    except StartupError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional here
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
