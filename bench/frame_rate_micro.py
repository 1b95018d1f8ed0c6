"""Cost of one WebSocket frame-rate check: our token bucket vs ``limits``' moving window.

The check runs on every inbound WebSocket frame (:mod:`server.transports.frame_rate`), so
it is timed against the alternatives the issue named: the ``limits`` package's memory
moving window, sync and async, at the default rate (20/s: most hits refused in a tight
loop) and with a limit so high that every hit is admitted. Microseconds per hit.

Run: ``python -m bench.frame_rate_micro [--hits 200000]``; prints one JSON object (a few
seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from functools import partial

import orjson
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage as AsyncMemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from server.transports.frame_rate import FrameRate

HUGE = 1_000_000_000


def _per_hit(hit: Callable[[], object], hits: int) -> float:
    started = time.perf_counter()
    for _ in range(hits):
        hit()
    return (time.perf_counter() - started) / hits * 1e6


async def _per_hit_async(limit: int, hits: int) -> float:
    limiter = AsyncMovingWindow(AsyncMemoryStorage())
    item = RateLimitItemPerSecond(limit, 1)
    started = time.perf_counter()
    for _ in range(hits):
        await limiter.hit(item, "conn")
    return (time.perf_counter() - started) / hits * 1e6


def measure(hits: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, limit in (("default_20", 20), ("admit_all", HUGE)):
        bucket = FrameRate(float(limit), limit if limit < HUGE else HUGE)
        out[f"bucket_{name}_us"] = _per_hit(bucket.admit, hits)
        hit = partial(
            MovingWindowRateLimiter(MemoryStorage()).hit, RateLimitItemPerSecond(limit, 1), "conn"
        )
        out[f"limits_sync_{name}_us"] = _per_hit(hit, hits)
        out[f"limits_async_{name}_us"] = asyncio.run(_per_hit_async(limit, hits))
    return {key: round(value, 3) for key, value in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200_000)
    args = parser.parse_args()
    result = {"hits": args.hits, "python": sys.version.split()[0], **measure(args.hits)}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
