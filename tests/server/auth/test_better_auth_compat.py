"""The device flow driven by the real npm ``better-auth`` client (tests/compat/device_flow.mjs).

Needs Node 20 and ``tests/compat/node_modules`` (``cd tests/compat && npm ci``; ``.ci/run``
does it). Without them the test skips with the reason, except under ``CI=true``, where it
fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth_helpers import bearer, make_user_session
from tests.conftest import IN_CI, Live

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMPAT = Path(__file__).resolve().parents[2] / "compat"
SCRIPT = COMPAT / "device_flow.mjs"
CLIENT_ID = "cero-cli"
TIMEOUT_S = 60.0


def _node_problem() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (COMPAT / "node_modules" / "better-auth").is_dir():
        return "tests/compat/node_modules missing (run: cd tests/compat && npm ci)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _need_node() -> None:
    problem = _node_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: the compatibility test must run)")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"device_poll_interval": 1, "device_client_ids": [CLIENT_ID]}


async def _next_event(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)
    if not line:
        err = b""
        if proc.stderr is not None:
            err = await proc.stderr.read()
        raise AssertionError(f"device_flow.mjs ended early: {err.decode()[-2000:]}")
    event: dict[str, Any] = json.loads(line)
    return event


async def test_device_flow_with_the_better_auth_client(live: Live) -> None:
    token, user_id = await make_user_session("Compat", "compat@example.test")
    env = {**os.environ, "CERO_POLL_SCALE": "1.2", "CERO_FLOW_TIMEOUT": str(TIMEOUT_S)}
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        live.url,
        CLIENT_ID,
        cwd=str(COMPAT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        code = await _next_event(proc)
        assert code["event"] == "code", code
        assert code["verification_uri"] == f"{live.settings.public_url}/device"
        assert code["interval"] == 1

        async with aiohttp.ClientSession() as http:
            async with http.get(
                live.url + "/api/auth/device",
                params={"user_code": code["user_code"]},
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["client_id"] == CLIENT_ID
            async with http.post(
                live.url + "/api/auth/device/approve",
                json={"userCode": code["user_code"]},
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200

            events = []
            while True:
                event = await _next_event(proc)
                events.append(event)
                if event["event"] in ("token", "error"):
                    break
            final = events[-1]
            assert final["event"] == "token", events
            assert all(e["event"] in ("pending", "slow_down", "token") for e in events)
            assert final["token_type"] == "Bearer"
            assert final["whoami_status"] == 200
            assert final["whoami"]["user"]["id"] == user_id
            assert final["session"]["user"]["id"] == user_id

            async with http.get(
                live.url + "/api/user/whoami", headers=bearer(final["access_token"])
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["user"]["email"] == "compat@example.test"
        assert await asyncio.wait_for(proc.wait(), TIMEOUT_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
