"""The database engine is bound once where the process starts; nothing falls back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import asyncio, piccolo_conf
from server.storage.tables import User
try:
    asyncio.run(User.select().run())
except RuntimeError as exc:
    print("refused:", exc)
"""


def test_an_unbound_process_fails_loudly_and_creates_no_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "DATABASE_"))}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL="mysql://not-supported")
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "refused: no database engine is bound" in out.stdout, out.stderr
    assert list(tmp_path.iterdir()) == []  # no ./cero.db quietly created


def test_a_bad_database_url_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "DATABASE_"))}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL="mysql://not-supported")
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "DATABASE_URL" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert list(tmp_path.iterdir()) == []
