"""Fixtures of the client library's tests: a signed-in user on the module's live app (both
engines), and a :class:`~client.sdk.CeroClient` for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import pytest_asyncio

from client.sdk import CeroClient
from tests.auth_helpers import make_user_session
from tests.conftest import Live


@pytest_asyncio.fixture(loop_scope="module")
async def token(live: Live) -> str:
    """A new user with a live session, per test: no test sees another's conversations."""
    bearer, _ = await make_user_session("Sdk")
    return bearer


@pytest_asyncio.fixture(loop_scope="module")
async def cero(live: Live, token: str) -> AsyncIterator[CeroClient]:
    async with CeroClient(live.url, token) as client:
        yield client


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """The demo model at 20 ms a token: an answer streams for about a second, long enough
    to cut a connection in the middle of it."""
    return {"demo_token_delay": 0.02}


def check_contiguous(events: Sequence[Mapping[str, Any]]) -> None:
    """Each event of one log follows the one before it: ``seq`` plus one, or plus
    ``merged`` for a merged token; a ``reset`` restarts the count. No gap, no duplicate."""
    previous: Mapping[str, Any] | None = None
    for event in events:
        if previous is not None and event["type"] != "reset":
            step = event.get("merged", 1) if event["type"] == "token" else 1
            assert event["epoch"] == previous["epoch"], (previous, event)
            assert event["seq"] == previous["seq"] + step, (previous, event)
        previous = event
