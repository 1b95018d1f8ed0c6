"""The log redaction guard (server/ops/logging.py): secrets out of structlog events and the
standard library's records, through the real ``configure_logging`` chain."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog

from server.ops.logging import REDACTED, configure_logging, scrub

SECRET = "s3cr3t-VALUE-abcdefghijklmnop"


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """JSON logs, as ``cero-api serve`` writes them to stderr, into a buffer."""
    out = io.BytesIO()
    stderr = io.TextIOWrapper(out)
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("debug", "json")
    try:
        yield out
    finally:
        structlog.reset_defaults()
        stderr.detach()  # leaves ``out`` open


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {SECRET}",
        f"subprotocol bearer.{SECRET}",
        f"GET /api/ws?token={SECRET}&x=1",
        f"/device?user_code={SECRET}",
        f"/api/auth/callback/github?code={SECRET}&state={SECRET}",
        f"grant_type=x&device_code={SECRET}&client_id=cero-cli",
        f"code_verifier={SECRET}",
        f"Cookie: better-auth.session_token={SECRET}; better-auth.session_data={SECRET}",
        f"Cookie: __Secure-better-auth.session_token={SECRET}",
        f"https://generativelanguage.example/v1?key={SECRET}",
    ],
)
def test_scrub_removes_secrets_from_text(text: str) -> None:
    cleaned = scrub(text)
    assert SECRET not in cleaned and REDACTED in cleaned, cleaned


def test_scrub_keeps_ordinary_text() -> None:
    for text in ("status_code=500", "error code not_found", "tokens=12", "keyboard"):
        assert scrub(text) == text


def test_events_and_library_records_are_redacted(
    json_logs: io.BytesIO, caplog: pytest.LogCaptureFixture
) -> None:
    log = structlog.get_logger("t")
    log.debug("signed_in", token=SECRET, api_key=SECRET, code="not_found", tokens=12)
    log.info("request", url=f"/device?user_code={SECRET}")
    try:
        raise ValueError(f"bad header Bearer {SECRET}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("aiohttp.client").warning("GET https://x.test/cb?code=%s failed", SECRET)
    err = (
        json_logs.getvalue().decode() + caplog.text
    )  # the root's handlers: basicConfig's or pytest's
    assert SECRET not in err, err
    events = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    first = events[0]
    assert (first["token"], first["api_key"]) == (REDACTED, REDACTED)
    assert (first["code"], first["tokens"]) == ("not_found", 12)
    assert "ValueError" in events[2]["exception"]
    assert f"code={REDACTED}" in err
