"""The single Piccolo app of Cero API; its migrations live in the top-level ``migrations/``."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from server.storage.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="cero",
    migrations_folder_path=str(Path(__file__).resolve().parents[2] / "migrations"),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[],
)
