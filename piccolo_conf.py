"""Piccolo's configuration.

Importing it reads no settings: ``DB`` is a placeholder that fails loudly until the
process binds the real engine where it starts (:func:`server.storage.db.bind`, called by
``cero-api serve|migrate`` and the test fixtures). Piccolo's own CLI
(``piccolo migrations new cero --auto``) binds from the settings here, so a bad
configuration stops it with the settings' one-line error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from piccolo.conf.apps import AppRegistry

from server.storage.db import Engine, UnboundEngine

DB: Engine = UnboundEngine()

if Path(sys.argv[0]).name == "piccolo":  # pragma: no cover - developer tooling
    from server.core.config import load_settings
    from server.storage.db import engine_for_url

    DB = engine_for_url(load_settings().database_url)

APP_REGISTRY = AppRegistry(apps=["server.storage.piccolo_app"])
