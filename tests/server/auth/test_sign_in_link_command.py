"""``cero-api sign-in-link``: a new single-use link for the running server, printed by
another process that shares its database (issue 25: no way back in after a sign-out)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conditions import until
from tests.conftest import create_pg_database, drop_pg_database
from tests.server_process import ROOT, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

CERO_API = (sys.executable, "-m", "server.cli")


async def _command(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    """``cero-api`` with the caller's environment minus server settings, plus ``env``."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CERO_", "BETTER_AUTH_", "DATABASE_URL"))
    }
    proc = await asyncio.create_subprocess_exec(
        *CERO_API,
        *args,
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), "CERO_LOG_FORMAT": "json", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def _sign_in(http: aiohttp.ClientSession, base: str, link: str) -> int:
    parts = urlsplit(link)
    async with http.get(f"{base}{parts.path}?{parts.query}", allow_redirects=False) as resp:
        return resp.status


async def _round_trip(tmp_path: Path, database_url: str | None) -> None:
    env: dict[str, str | None] = {"BETTER_AUTH_SECRET": None}
    async with serve(database_url, cwd=tmp_path, env=env) as server:
        # Printed once the link is stored, just after "listening" (a fresh-clone CI run
        # read the log 11 ms too early).
        await until(lambda: "Sign in: " in server.log(), within=10, what="the sign-in link")
        started = server.log()
        first = started.split("Sign in: ", 1)[1].split()[0]
        db_env = {} if database_url is None else {"DATABASE_URL": database_url}
        async with aiohttp.ClientSession() as http:
            assert await _sign_in(http, server.url, first) == 302
            assert await _sign_in(http, server.url, first) == 403  # used: no way back...
            code, out, err = await _command(
                "sign-in-link", "--port", str(server.port), cwd=tmp_path, **db_env
            )
            assert code == 0, err
            link = out.strip()
            assert link.startswith(f"http://127.0.0.1:{server.port}/auth/local?token=")
            token = link.partition("?token=")[2]
            assert token not in err  # the log says a link was issued, never its token
            assert await _sign_in(http, server.url, link) == 302  # ...until now
            assert await _sign_in(http, server.url, link) == 403
            # Each run is a new link; --next is carried.
            code, out, _ = await _command(
                "sign-in-link", "--port", str(server.port), "--next", "/app", cwd=tmp_path, **db_env
            )
            assert code == 0 and out.strip() != link and out.strip().endswith("&next=/app")
            assert await _sign_in(http, server.url, out.strip()) == 302


async def test_sign_in_link_for_the_running_server_sqlite(tmp_path: Path) -> None:
    """The default: a SQLite file in the working directory, shared by both processes."""
    await _round_trip(tmp_path, None)


@pytest.mark.postgres
async def test_sign_in_link_for_the_running_server_postgres(tmp_path: Path) -> None:
    url = await create_pg_database()
    try:
        await _round_trip(tmp_path, url)
    finally:
        await drop_pg_database(url)


async def test_sign_in_link_refused_outside_local_mode(tmp_path: Path) -> None:
    code, out, err = await _command(
        "sign-in-link", cwd=tmp_path, CERO_HOST="0.0.0.0", BETTER_AUTH_SECRET="s" * 32
    )
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "local sign-in is off" in lines[0], err
    code, _, err = await _command("sign-in-link", cwd=tmp_path)
    assert code != 0 and "no database" in err and not (tmp_path / "cero.db").exists()
    (tmp_path / "cero.db").touch()
    code, _, err = await _command("sign-in-link", "--next", "//evil.example", cwd=tmp_path)
    assert code != 0 and "--next" in err and "Traceback" not in err
