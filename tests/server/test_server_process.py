"""The helper that runs ``cero-api serve`` in child processes (tests/server_process.py)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from tests.server_process import serve, serve_many, server_env

pytestmark = pytest.mark.slow


def test_env_is_hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERO_MAX_BODY", "1")
    monkeypatch.setenv("GEMINI_API_KEY", "leak")
    env = server_env(4242, None, {"CERO_LOG_LEVEL": "error", "BETTER_AUTH_SECRET": None})
    assert "CERO_MAX_BODY" not in env and "GEMINI_API_KEY" not in env
    assert "DATABASE_URL" not in env and "BETTER_AUTH_SECRET" not in env
    assert env["CERO_PORT"] == "4242" and env["CERO_LOG_LEVEL"] == "error"
    assert env["PATH"] == os.environ["PATH"]


async def test_many_processes_on_one_database_start_serve_and_stop(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'cero.db'}"
    async with serve_many(
        3, database_url, cwd=tmp_path, env_of=lambda i: {"CERO_PUBLIC_URL": f"http://n{i}.test"}
    ) as servers:
        assert len({s.pid for s in servers}) == 3 and len({s.url for s in servers}) == 3
        async with aiohttp.ClientSession() as http:
            for server in servers:
                assert server.running
                async with http.get(server.url + "/readyz") as resp:
                    assert resp.status == 200
        assert all('"listening"' in s.log() for s in servers)
        assert "http://n2.test" in servers[2].log()
    for server in servers:
        assert server.exit is not None and server.exit.code == 0 and not server.exit.killed
        assert '"stopped"' in server.log()  # the log outlives the process and its file
        assert not server.log_path.exists()


async def test_a_server_that_dies_at_start_fails_at_once_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="exited with 2 before it was ready") as info:
        async with serve("mysql://nowhere/x", cwd=tmp_path, ready_within=60):
            pytest.fail("not ready, never here")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "configuration error: DATABASE_URL" in notes, notes


async def test_a_failure_in_the_block_carries_the_log_and_stops_the_server(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError) as info:
        async with serve(None, cwd=tmp_path, env={"CERO_LOG_LEVEL": "info"}) as server:
            raise RuntimeError("the test failed")
    assert not server.running and server.exit is not None and server.exit.code == 0
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert f"pid {server.pid}" in notes and '"stopped"' in notes, notes
