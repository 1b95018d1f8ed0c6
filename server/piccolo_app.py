"""The single Piccolo app of Cero API; its migrations live in the top-level ``migrations/``."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from server.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="cero",
    migrations_folder_path=str(Path(__file__).resolve().parent.parent / "migrations"),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[],
)
