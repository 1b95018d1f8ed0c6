"""The garbage collector's share of a served process: freeze the start-up heap.

Measured (bench scenario 2, 100 conversations x 2 WebSocket subscribers, one process,
SQLite, a ``gc.callbacks`` timer in the server): without this, a full (generation 2)
collection walked every object the imports and the app's set-up created (google-genai,
pydantic, Piccolo, aiohttp...) and held the event loop for 70-173 ms each time; every token
in flight waited for it, which was the whole of the row's p99 (200 ms against a p50 of
2 ms; the late deliveries all fell in the 100 ms around one such collection).

``gc.freeze()`` once the server is listening moves everything alive at that point into the
permanent generation, which later collections skip (the technique CPython documents for
pre-fork servers and Instagram described for theirs). Cycles created afterwards are still
collected; what start-up built lives for the whole process anyway.

The collector's thresholds stay CPython's (700, 10, 10). Measured in-process
(``bench.fanout_micro``'s hub and direct path, 1,000 subscribers, 3,000 tokens, the
server's imports and 100,000 live containers; GC time summed by ``gc.callbacks``, two runs
each, machine shared): no freeze 137-203 ms of GC, frozen 22-29 ms, frozen with (10,000,
20, 100) 6-7 ms. Those raised thresholds were tried and taken back: with them,
``tests/server/limits/test_connection_churn.py``'s second round of 1,000 vanishing clients
left RSS 8.7-9.1 MB higher (its bound is 8 MB; 3 runs failed), with CPython's it passes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def freeze_startup_heap() -> None:
    """Collect once, then freeze what survived (call once the app is set up)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "gc_frozen",
        objects=gc.get_freeze_count(),
        ms=round((time.perf_counter() - started) * 1000, 1),
    )


def meter_pauses(observe: Callable[[str, float], None]) -> Callable[[str, dict[str, int]], None]:
    """Time every collection and report it as ``observe(generation, seconds)``; returns
    the callback installed in ``gc.callbacks`` (remove it to stop)."""
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            observe(str(info["generation"]), time.perf_counter() - started)

    gc.callbacks.append(callback)
    return callback
