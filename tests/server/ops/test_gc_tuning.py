"""A served process freezes its start-up heap (server/ops/gc_tuning.py, issue 21).

Bench scenario 2 at 100 conversations had p99 200 ms against p50 2 ms: every late delivery
fell in the 100 ms around one full garbage collection, which walked the whole start-up
heap (70-173 ms each). ``cero-api serve`` now collects once and freezes what survived once
it listens, and meters every collection's pause in ``/metrics``.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path

import aiohttp
import pytest

from server.ops.gc_tuning import freeze_startup_heap, meter_pauses
from tests.process_stats import METRICS_AUTH
from tests.server_process import serve


def _value(text: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.M)
    assert match, pattern
    return float(match.group(1))


@pytest.mark.asyncio(loop_scope="module")
async def test_serve_freezes_the_startup_heap_and_meters_pauses(tmp_path: Path) -> None:
    async with serve(None, cwd=tmp_path) as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/metrics", headers=METRICS_AUTH) as resp:
                assert resp.status == 200
                text = await resp.text()
    # The imports and the app alone are well over 100,000 objects; all of them frozen.
    assert _value(text, "cero_gc_frozen_objects") > 100_000
    # The freeze's own full collection ran before the meter was installed; the family is
    # declared for every generation that collected since (at least the youngest).
    assert "# TYPE cero_gc_pause_seconds histogram" in text


def test_pause_meter_reports_each_collection_by_generation() -> None:
    seen: list[tuple[str, float]] = []
    callback = meter_pauses(lambda generation, seconds: seen.append((generation, seconds)))
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        gc.callbacks.remove(callback)
    assert [g for g, _ in seen[-2:]] == ["0", "2"]
    assert all(seconds >= 0 for _, seconds in seen)


def test_freeze_moves_live_objects_out_of_collections() -> None:
    try:
        before = gc.get_freeze_count()
        kept = [[i] for i in range(10_000)]  # containers: tracked by the collector
        freeze_startup_heap()
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()
