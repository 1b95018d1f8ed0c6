"""Piccolo's configuration: ``DATABASE_URL`` picks the engine.

``sqlite:///path`` → SQLiteEngine (WAL, busy timeout), ``postgresql://...`` → PostgresEngine
(the app starts and closes its asyncpg pool). The URL comes from :mod:`server.config`;
:func:`server.db.use_engine` swaps ``DB`` when an app (or a test) picks another database.
"""

from __future__ import annotations

from piccolo.conf.apps import AppRegistry

from server.config import ConfigError, load_settings
from server.db import Engine, engine_for_url

try:
    DB: Engine = engine_for_url(load_settings().database_url)
except ConfigError:  # the CLI reports the error itself; keep Piccolo importable
    DB = engine_for_url("sqlite:///cero.db")

APP_REGISTRY = AppRegistry(apps=["server.piccolo_app"])
