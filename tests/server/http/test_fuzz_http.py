"""schemathesis fuzzes a live ``cero-api serve`` against its own ``/openapi.json``:
signed in as a real user (bearer) and anonymously. Every check schemathesis has (no 5xx,
statuses, content types, headers and bodies as documented, negative data rejected,
authentication not ignored, ...) plus ``tests/schemathesis_hooks.py`` (no HTML error page,
no traceback), within a bounded number of examples per operation.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from server.storage import db
from tests.auth_helpers import bearer, make_user_session
from tests.server_process import serve

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
#: Examples per operation and phase: bounds the run (all three runs: 33 s on 2 cores).
MAX_EXAMPLES = int(os.environ.get("CERO_FUZZ_EXAMPLES", "100"))
ST = str(Path(sys.executable).with_name("st"))
#: Checks that need what a generated request cannot have: a resource created in the same
#: run (stateful) — no operation here has links between responses.
EXCLUDED = "use_after_free,ensure_resource_availability"


async def _st(
    url: str, *headers: str, report: Path, skip: tuple[str, ...] = (), only: str | None = None
) -> tuple[int, str]:
    args = [
        ST,
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1313",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-database",
        "none",
        "--no-color",
        "--generation-with-security-parameters",
        "false",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        # The WebSocket route needs an upgrade; the live SSE stream of a conversation
        # schemathesis learnt the id of never ends (by design): each such case sat out the
        # request timeout (measured: fuzzing 241 s instead of 8 s with it). Both are
        # covered by their own tests (test_ws*.py, test_chat.py, test_hub*.py). The account
        # channel's stream never ends either (test_account_channel.py).
        "--exclude-path",
        "/api/ws",
        "--exclude-path",
        "/api/conversations/{id}/events",
        "--exclude-path",
        "/api/account/events",
    ]
    if only is not None:
        args += ["--include-path", only]
    for path in skip:
        args += ["--exclude-path", path]
    for header in headers:
        args += ["--header", header]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=ROOT,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(600)
async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'cero.db'}"
    engine = db.bind(database_url)
    await db.migrate(engine)
    token, _ = await make_user_session("Fuzz")
    spare, _ = await make_user_session("Spare")
    env = {"CERO_LOG_LEVEL": "warning", "CERO_DEMO_TOKEN_DELAY": "0"}
    async with serve(database_url, cwd=tmp_path, env=env) as server:
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/api/user/whoami", headers=bearer(token)) as resp,
        ):
            # The bearer run must be signed in, or it fuzzes only the 401 path.
            assert resp.status == 200, await resp.text()
        results = [
            # Signing out, or revoking the session id schemathesis learns from
            # list-sessions (it did: the full suite's run ended signed out), would end the
            # session the rest of the run fuzzes with: sign-out is fuzzed anonymously,
            # revoke-session on its own with a second session.
            await _st(
                server.url,
                f"Authorization: Bearer {token}",
                report=tmp_path / "bearer.xml",
                skip=("/api/auth/sign-out", "/api/auth/revoke-session"),
            ),
            await _st(
                server.url,
                f"Authorization: Bearer {spare}",
                report=tmp_path / "revoke.xml",
                only="/api/auth/revoke-session",
            ),
            await _st(server.url, report=tmp_path / "anonymous.xml"),
        ]
        assert server.running
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/api/user/whoami", headers=bearer(token)) as resp,
        ):
            assert resp.status == 200, "the bearer run lost its session half-way"
    for who, (code, out) in zip(("bearer", "revoke-session", "anonymous"), results, strict=True):
        assert code == 0, f"schemathesis ({who}) found failures:\n{out[-20000:]}"
