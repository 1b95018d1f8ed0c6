"""The app in this process, on a real port: what tests and benchmarks that share the event
loop with the server start it with (``tests/conftest.py`` wraps it in its fixtures;
``bench/idle_subscriptions.py`` measures it).

Owns :class:`Live`, :func:`in_process_settings`, :func:`start_live` and :func:`live_from`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from server.core.config import Settings, load_settings

#: The signing secret of an in-process app (never a real deployment's).
IN_PROCESS_SECRET = "test-secret-" + "x" * 32


def in_process_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for an app that shares this process's event loop with its clients, read
    from ``overrides`` only (no environment file): the loop-lag admission rule is off, since
    the clients' work on the shared loop is not the server's lag."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret": IN_PROCESS_SECRET,
        "max_loop_lag": 0,
        **overrides,
    }
    return load_settings(env_file=None, **values)


@dataclass
class Live:
    """A running app on a real port."""

    app: web.Application
    server: TestServer
    url: str
    settings: Settings


async def start_live(settings_factory: Callable[[int], Settings]) -> Live:
    """Start ``create_app`` on a free port; ``settings_factory(port)`` builds its settings.
    Close it with ``live.server.close()`` (or use :func:`live_from`)."""
    from server.app import create_app
    from server.auth import local
    from server.storage import db

    port = unused_port()
    settings = settings_factory(port)
    # Where a process would bind it: at its start.
    db.bind(settings.database_url, lock_timeout=db.lock_timeout(settings))
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    await local.announce(app)  # as `cero-api serve` does once it listens
    return Live(app=app, server=server, url=f"http://127.0.0.1:{port}", settings=settings)


@asynccontextmanager
async def live_from(settings_factory: Callable[[int], Settings]) -> AsyncIterator[Live]:
    """:func:`start_live` for a block: ``settings_factory(port)`` builds the settings (for
    the few that depend on the port). On exit the app closes and the tables are bound
    again to the engine they had before, so an extra app inside a test leaves the
    module's app usable."""
    import piccolo_conf
    from server.storage import db

    previous = getattr(piccolo_conf, "DB", None)
    running = await start_live(settings_factory)
    try:
        yield running
    finally:
        await running.server.close()
        if previous is not None:
            db.use_engine(previous)
