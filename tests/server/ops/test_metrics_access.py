"""Who may read the metrics (issue 20, item 3): no anonymous client on the API's listener.

- ``GET /metrics`` on the API's listener answers ``401`` without ``CERO_METRICS_TOKEN`` as a
  bearer token (a user's session token is not it), ``200`` with it; ``404`` when no token
  is set.
- ``CERO_METRICS_ADDRESS`` serves the metrics on a listener of its own (a ``cero-api serve``
  child): there without a credential, and nothing else there.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from server.core.config import ConfigError
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import live_app, make_settings
from tests.process_stats import METRICS_AUTH, METRICS_TOKEN
from tests.server_process import serve

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    async with http.get(url, headers=headers or {}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_public_listener_needs_the_metrics_token(database_url: str) -> None:
    async with live_app(database_url) as live:
        token, _ = await make_user_session("Not an operator")
        async with aiohttp.ClientSession() as http:
            for who, headers in (
                ("anonymous", {}),
                ("a user's session", bearer(token)),
                ("a wrong token", {"Authorization": "Bearer " + "x" * len(METRICS_TOKEN)}),
                ("the token, not as bearer", {"Authorization": METRICS_TOKEN}),
            ):
                status, answer, text = await _get(http, live.url + "/metrics", headers)
                assert status == 401, who
                assert answer["WWW-Authenticate"] == "Bearer", who
                assert "cero_" not in text and "process_" not in text, who
            status, answer, text = await _get(http, live.url + "/metrics", METRICS_AUTH)
            assert status == 200 and "cero_http_responses_total" in text
            assert answer["Content-Type"].startswith("text/plain")


async def test_no_token_no_metrics_on_the_public_listener(database_url: str) -> None:
    async with live_app(database_url, metrics_token=None) as live:
        async with aiohttp.ClientSession() as http:
            for headers in ({}, METRICS_AUTH):
                status, _, text = await _get(http, live.url + "/metrics", headers)
                assert status == 404 and "cero_" not in text


async def test_metrics_listener_serves_them_on_its_own_port(tmp_path: Path) -> None:
    port = unused_port()
    env = {"CERO_METRICS_ADDRESS": f"127.0.0.1:{port}", "CERO_METRICS_TOKEN": None}
    async with serve(None, cwd=tmp_path, env=env) as server, aiohttp.ClientSession() as http:
        metrics = f"http://127.0.0.1:{port}"
        status, answer, text = await _get(http, metrics + "/metrics")
        assert status == 200 and "cero_http_responses_total" in text, status
        assert "process_open_fds" in text
        assert answer["Server"] == "cero"
        # Only the metrics there: not the API.
        for path in ("/", "/healthz", "/api/models", "/openapi.json"):
            assert (await _get(http, metrics + path))[0] == 404, path
        # And none on the API's listener (no token set).
        status, _, text = await _get(http, server.url + "/metrics", METRICS_AUTH)
        assert status == 404 and "cero_" not in text
        assert "metrics_listening" in server.log()


async def test_metrics_settings_are_checked() -> None:
    for bad in ("9464", "127.0.0.1:", "127.0.0.1:70000", "host:port"):
        with pytest.raises(ConfigError, match="CERO_METRICS_ADDRESS"):
            make_settings("sqlite:///x.db", metrics_address=bad)
    with pytest.raises(ConfigError, match="CERO_METRICS_TOKEN"):
        make_settings("sqlite:///x.db", metrics_token="short")
    for off in ("", "off", "OFF", None):
        assert make_settings("sqlite:///x.db", metrics_address=off).metrics_listen is None
    six = make_settings("sqlite:///x.db", metrics_address="[::1]:9464")
    assert six.metrics_listen == ("::1", 9464)
