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

#: ``cero``: the server's tables (``cero-api migrate`` applies its migrations only).
#: ``user`` and ``session_auth``: Piccolo's ``piccolo_user`` and piccolo_api's ``sessions``,
#: the database studio's operators and their sign-ins (``cero-api studio``, which
#: migrates them; server/studio/operators.py).
APP_REGISTRY = AppRegistry(
    apps=[
        "server.storage.piccolo_app",
        "piccolo.apps.user.piccolo_app",
        "piccolo_api.session_auth.piccolo_app",
    ]
)
