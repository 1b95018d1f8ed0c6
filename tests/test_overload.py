"""Admission control: a lagging event loop refuses new answers, never running ones."""

from __future__ import annotations

import time

import aiohttp
import orjson
import pytest

from server.app_keys import LAG
from server.overload import WINDOW_S, LagMonitor
from tests.auth_helpers import bearer, make_user_session, running
from tests.conditions import until
from tests.conftest import make_settings


def test_lag_counts_for_its_window_then_goes() -> None:
    monitor = LagMonitor(max_lag=0.5)
    monitor.note(100.0, 0.0)
    assert not monitor.overloaded
    monitor.note(100.1, 0.8)
    assert monitor.overloaded and monitor.lag == 0.8
    monitor.note(100.1 + WINDOW_S / 2, 0.0)
    assert monitor.overloaded  # one spike counts for the whole window
    monitor.note(100.2 + WINDOW_S, 0.01)
    assert not monitor.overloaded
    off = LagMonitor(max_lag=0)
    off.note(1.0, 10.0)
    assert not off.overloaded


@pytest.mark.asyncio(loop_scope="module")
async def test_a_stalled_loop_refuses_new_answers_and_finishes_running_ones(
    database_url: str,
) -> None:
    async with running(
        lambda port: make_settings(database_url, port=port, max_loop_lag=0.2, demo_token_delay=0.02)
    ) as live:
        token, _ = await make_user_session("Busy")
        monitor = live.app[LAG]
        # Start from a loop that keeps time (start-up work in this process, which serves
        # the app and runs the test, may have lagged it within the last window).
        await until(lambda: not monitor.overloaded, WINDOW_S + 3)
        async with aiohttp.ClientSession() as http:
            first = await http.post(
                live.url + "/api/chat",
                json={"message": "hi", "aiModel": "demo"},
                headers=bearer(token),
            )
            assert first.status == 200
            await first.content.readline()  # init: the answer streams
            time.sleep(0.5)  # the behaviour under test: the event loop stalls
            await until(lambda: monitor.overloaded, 5)  # its timer fired late and noted it
            async with http.post(
                live.url + "/api/chat",
                json={"message": "more", "aiModel": "demo"},
                headers=bearer(token),
            ) as refused:
                assert refused.status == 503
                assert refused.headers["Retry-After"] == "2"
                assert (await refused.json())["code"] == "overloaded"
            lines = [orjson.loads(line) for line in (await first.read()).splitlines() if line]
            assert lines[-1]["topic"] == "done"  # the running answer was never touched
            first.release()
            # The spike counts for WINDOW_S, then goes.
            await until(lambda: not monitor.overloaded, WINDOW_S + 5)
            async with http.post(
                live.url + "/api/chat",
                json={"message": "later", "aiModel": "demo"},
                headers=bearer(token),
            ) as later:
                assert later.status == 200
                await later.read()
