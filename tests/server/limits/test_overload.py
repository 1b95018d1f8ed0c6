"""Admission control (server/limits/admission.py): a start is refused only when this process's own
work is past capacity; below the floor, never; a lagging loop alone is not overload."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import orjson
import pytest

from server.limits.admission import ADMISSION, WINDOW_S, Admission, AdmissionLimits, Overloaded
from server.storage import db
from tests.auth_helpers import make_user_session
from tests.conditions import until
from tests.conftest import live_app
from tests.live_clients import post_chat
from tests.server_process import serve


def _admission(running: int = 0, **limits: float) -> Admission:
    return Admission(AdmissionLimits(**limits), running=lambda: running)  # type: ignore[arg-type]


def test_saturated_needs_both_cpu_and_lag_of_this_process() -> None:
    admission = _admission(max_cpu=0.9, max_lag=0.25)
    admission.note(100.0, 0.1, 0.01, 0.8)  # the loop lagged, this process hardly ran
    assert admission.lag == 0.8 and not admission.saturated
    admission.note(100.1, 0.1, 0.1, 0.0)  # busy, keeping time
    assert admission.cpu == pytest.approx(0.55) and not admission.saturated
    admission.note(100.2, 0.1, 0.1, 0.3)
    admission.note(100.3, 0.1, 0.1, 0.3)
    admission.note(100.4, 0.1, 0.1, 0.3)
    admission.note(100.5, 0.1, 0.1, 0.3)
    admission.note(100.6, 0.1, 0.1, 0.3)
    admission.note(100.7, 0.1, 0.1, 0.3)
    admission.note(100.8, 0.1, 0.1, 0.3)
    admission.note(100.9, 0.1, 0.1, 0.3)
    admission.note(101.05, 0.1, 0.1, 0.3)  # the first (idle) samples have left the window
    assert admission.cpu >= 0.9 and admission.saturated
    admission.note(101.05 + WINDOW_S + 0.01, 0.1, 0.0, 0.0)
    assert not admission.saturated
    off = _admission(max_lag=0)
    off.note(1.0, 0.1, 0.1, 10.0)
    assert not off.saturated


@pytest.mark.asyncio(loop_scope="module")
async def test_below_the_floor_a_saturated_process_still_admits() -> None:
    admission = _admission(running=3, floor=4, max_cpu=0.5, max_lag=0.1, wait=0.01)
    admission.note(1.0, 0.1, 0.1, 1.0)
    assert admission.saturated
    async with admission.admitted():  # 3 running: below the floor
        assert admission.running == 4
        with pytest.raises(Overloaded) as refused:  # 4 now: at the floor, saturated
            async with admission.admitted():
                pass
    assert refused.value.status == 503 and refused.value.code == "overloaded"
    assert refused.value.headers["Retry-After"] == "1"
    assert admission.refused == 1 and admission.queued == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_queued_start_is_let_in_when_the_process_is_no_longer_saturated() -> None:
    admission = _admission(running=20, floor=4, max_cpu=0.5, max_lag=0.1, wait=5, queue=2)
    admission.note(1.0, 0.1, 0.1, 1.0)
    waiting = [asyncio.ensure_future(admission.admitted().__aenter__()) for _ in range(2)]
    await until(lambda: admission.queued == 2, 1)
    with pytest.raises(Overloaded):  # the queue holds 2
        async with admission.admitted():
            pass
    admission.release()  # still saturated: nobody goes
    await asyncio.sleep(0)  # one loop turn: a waiter let in would have run by now
    assert not any(task.done() for task in waiting)
    admission.note(1.0 + WINDOW_S + 0.1, 0.1, 0.0, 0.0)
    admission.release()
    await asyncio.gather(*waiting)
    assert admission.queued == 0 and admission.queued_total == 2 and admission.refused == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_a_lagging_loop_alone_never_refuses_a_single_user(database_url: str) -> None:
    """Issue 20, item 12: one lag spike used to close admission for 2 s for everyone. A
    stalled loop (as on a machine whose cores other processes hold) is lag without this
    process's CPU: the user's chat is served."""
    async with live_app(database_url, max_loop_lag=0.05) as live:
        token, _ = await make_user_session("Alone")
        admission = live.app[ADMISSION]
        async with aiohttp.ClientSession() as http:
            time.sleep(0.5)  # the loop stalls: the sampler's timer fires late
            await until(lambda: admission.lag > 0.05, 5)
            async with post_chat(http, live.url, token, message="hi", aiModel="demo") as resp:
                assert resp.status == 200, await resp.text()
                lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
                assert lines[-1]["topic"] == "done"
        assert admission.refused == 0


def _burn(seconds: float) -> None:
    """Use this process's CPU inside the event loop: lag *and* CPU."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.asyncio(loop_scope="module")
async def test_a_saturated_process_queues_then_refuses_and_running_answers_go_on(
    database_url: str,
) -> None:
    async with live_app(
        database_url,
        # The mechanism, not the thresholds: on a shared machine this process's share
        # of a core while it burns may be small (its CPU is what counts, not wall time).
        max_loop_lag=0.1,
        max_cpu=0.05,
        admission_floor=1,
        admission_wait=0.3,
        demo_token_delay=0.02,
    ) as live:
        token, _ = await make_user_session("Busy")
        admission = live.app[ADMISSION]
        async with aiohttp.ClientSession() as http:
            first = await post_chat(http, live.url, token, message="hi", aiModel="demo")
            assert first.status == 200
            await first.content.readline()  # init: the answer streams, 1 running
            _burn(0.6)
            await until(lambda: admission.saturated, 5)
            async with post_chat(http, live.url, token, message="more", aiModel="demo") as refused:
                assert refused.status == 503
                assert refused.headers["Retry-After"] == "1"
                assert (await refused.json())["code"] == "overloaded"
            assert admission.queued_total == 1 and admission.refused == 1
            lines = [orjson.loads(line) for line in (await first.read()).splitlines() if line]
            assert lines[-1]["topic"] == "done"  # the running answer was never touched
            first.release()
            # Queued, not refused, when the wait outlasts the saturation.
            admission.limits = AdmissionLimits(
                floor=1, max_cpu=0.05, max_lag=0.1, wait=WINDOW_S * 5, queue=10
            )
            second = await post_chat(http, live.url, token, message="again", aiModel="demo")
            assert second.status == 200
            await second.content.readline()
            _burn(0.6)
            await until(lambda: admission.saturated, 5)
            async with post_chat(http, live.url, token, message="later", aiModel="demo") as later:
                assert later.status == 200
                assert admission.queued_total == 2
                await later.read()
            await second.read()
            second.release()
        assert admission.refused == 1


@contextlib.contextmanager
def _cpu_hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy process per core, stopped by pid at the end."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_busy_cores_never_turn_sequential_chats_into_overloaded(
    database_url: str,
) -> None:
    """Every core busy with other processes, a server on default admission settings (but a
    loop-lag limit low enough that lag is certain): 20 sequential chats, no 503."""
    await db.migrate(db.bind(database_url))
    token, _ = await make_user_session("Hogged")
    async with serve(database_url, env={"CERO_MAX_LOOP_LAG": "0.02"}) as server:
        with _cpu_hogs():
            async with aiohttp.ClientSession() as http:
                for n in range(20):
                    async with post_chat(
                        http, server.url, token, message=f"chat {n}", aiModel="demo"
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        body = await resp.read()
                        assert orjson.loads(body.splitlines()[-1])["topic"] == "done"
                async with http.get(server.url + "/readyz") as ready:
                    admission = (await ready.json())["admission"]
                    assert admission["running"] == 0 and admission["floor"] == 16
