"""Configuration errors and the server as a subprocess, started the way the README says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from server.core.config import ConfigError, load_settings
from tests.conftest import create_pg_database, drop_pg_database
from tests.server_process import serve

ROOT = Path(__file__).resolve().parents[2]
CERO_API = [sys.executable, "-m", "server.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "BETTER_AUTH_"))}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("port", "abc", "CERO_PORT"),
        ("port", 70000, "CERO_PORT"),
        ("database_url", "mysql://x/y", "DATABASE_URL"),
        ("database_url", "postgresql://h:99999/x", "DATABASE_URL"),
        ("database_url", "sqlite:///", "DATABASE_URL"),
        ("trusted_origins_setting", "not-an-origin", "CERO_TRUSTED_ORIGINS"),
        ("trusted_proxies", "10.0.0.300", "CERO_TRUSTED_PROXIES"),
        ("gemini_base_url", "ftp://x", "CERO_GEMINI_BASE_URL"),
        ("device_poll_interval", -1, "CERO_DEVICE_POLL_INTERVAL"),
    ],
)
def test_bad_setting_names_the_variable(name: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, **{name: value})
    line = str(info.value)
    assert needle in line and "\n" not in line


def test_secret_required_outside_local_mode() -> None:
    with pytest.raises(ConfigError, match="BETTER_AUTH_SECRET"):
        load_settings(env_file=None, host="0.0.0.0")
    settings = load_settings(env_file=None, host="0.0.0.0", secret="s" * 32)
    assert not settings.local_mode


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, database_url=f"sqlite:///{tmp_path}/c.db")
    assert settings.public_url == "http://127.0.0.1:3001"
    assert settings.local_mode and settings.is_sqlite
    assert settings.sqlite_path == tmp_path / "c.db"  # absolute path kept absolute
    assert "http://127.0.0.1:3001" in settings.trusted_origins
    assert len(settings.auth_secret) >= 32
    assert (
        settings.auth_secret
        == load_settings(env_file=None, database_url=f"sqlite:///{tmp_path}/c.db").auth_secret
    )


def test_dotenv_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CERO_PORT=4567\n")
    assert load_settings(env_file=str(env_file)).port == 4567


def _run_cli(
    *args: str, cwd: Path, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CERO_API, *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_bad_config_one_line(tmp_path: Path) -> None:
    result = _run_cli("serve", cwd=tmp_path, CERO_PORT="seventy")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CERO_PORT" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unreachable_database_one_line(tmp_path: Path) -> None:
    result = _run_cli(
        "serve", cwd=tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing"
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATABASE_URL" in lines[0], result.stderr


def test_cli_port_in_use_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run_cli("serve", cwd=tmp_path, CERO_PORT=str(port), CERO_LOG_LEVEL="warning")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CERO_PORT" in lines[0], result.stderr


def test_cli_check_config_and_migrate(tmp_path: Path) -> None:
    assert _run_cli("check-config", cwd=tmp_path).returncode == 0
    result = _run_cli("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cero.db").exists()


async def _serve_and_probe(
    tmp_path: Path, command: list[str] | None = None, cwd: Path | None = None, **env: str
) -> str:
    """Start the server with nothing configured but ``env``, wait until it is ready, check
    ``/``, stop it with SIGTERM; return its log.

    `make` itself dies of the SIGTERM it passes on, so only the server's own clean stop
    (its `stopped` log line) is required of a command other than `cero-api serve`."""
    unset: dict[str, str | None] = {"BETTER_AUTH_SECRET": None, "CERO_LOG_FORMAT": None}
    async with serve(
        env.pop("DATABASE_URL", None),
        cwd=cwd or tmp_path,
        env={**unset, **env},
        command=command or [*CERO_API, "serve"],
    ) as server:
        async with aiohttp.ClientSession() as http, http.get(server.url + "/") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok"}
        stopped = await server.stop(20)
    err = server.log()
    if command is None:
        assert stopped.code == 0, err[-2000:]
    assert '"stopped"' in err, err[-2000:]
    assert "Traceback" not in err
    return err


@pytest.mark.asyncio
async def test_server_subprocess_sqlite_default(tmp_path: Path) -> None:
    """``cero-api serve`` with nothing configured: SQLite file in the working directory."""
    err = await _serve_and_probe(tmp_path)
    assert (tmp_path / "cero.db").exists()
    assert "Sign in: http://127.0.0.1:" in err and "/auth/local?token=" in err


@pytest.mark.asyncio
@pytest.mark.postgres
async def test_server_subprocess_postgres(tmp_path: Path) -> None:
    url = await create_pg_database()
    try:
        await _serve_and_probe(tmp_path, DATABASE_URL=url)
    finally:
        await drop_pg_database(url)


@pytest.mark.asyncio
@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "cero-api").exists(), reason="needs the .venv `make` creates"
)
async def test_readme_run_command_serves(tmp_path: Path) -> None:
    """The README's `make run`, with only the port and the database file moved aside."""
    err = await _serve_and_probe(
        tmp_path,
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        DATABASE_URL=f"sqlite:///{tmp_path}/cero.db",
    )
    assert (tmp_path / "cero.db").exists()
    assert "/auth/local?token=" in err
