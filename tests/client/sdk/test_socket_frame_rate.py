"""Frames over the server's frame rate (docs/api.md, "Fault codes": one ``rate_limited``
fault a second, the other frames over the rate dropped without an answer), against the
live app (both engines) with a small frame budget: the socket sends one command at a time
and waits ``retryAfter`` after the fault, so no command is ever left without an answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client.sdk import CeroClient, RateLimited

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"ws_frames_per_second": 2.0, "ws_frame_burst": 3}


async def test_the_fault_is_raised_and_no_frame_is_dropped_silently(cero: CeroClient) -> None:
    async with cero.socket() as socket:
        loop = asyncio.get_running_loop()
        pings = [loop.create_task(socket.ping()) for _ in range(6)]
        results = await asyncio.wait_for(asyncio.gather(*pings, return_exceptions=True), 20)
        # The burst of three is answered; the fourth finds the bucket empty and gets the
        # fault (raised, with when to retry); the rest wait that long and are answered.
        assert results[:3] == [None, None, None]
        limited = results[3]
        assert isinstance(limited, RateLimited), results
        assert limited.code == "rate_limited" and limited.retry_after
        assert results[4:] == [None, None]
        assert socket.connections == 1
