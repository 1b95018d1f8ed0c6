"""Give the memory Python freed back to the operating system (glibc only).

Measured (issue 15, item 13; ``python -m tests.server.ops.test_memory``, 40 answers of 1 MiB at
once, SQLite, actors stopping 1 s after their answers): RSS 99 MB at the start, 309 / 401 /
554 MB after rounds 1-3, never returned, while the live Python memory was back at its
start. ``mallinfo2`` showed why: 698 MB of arena, 109 MB in use, 589 MB free inside the
arenas. glibc returns free memory to the system only from
the top of a heap; a few long-lived objects allocated above the answers' buffers (the
replay logs, token frames, the partial texts written to the database) pin the rest.
``MALLOC_ARENA_MAX=2`` or a fixed ``mmap_threshold`` did not help (the buffers are mostly
small and mid-sized); ``malloc_trim(0)``, which releases free pages anywhere in every
arena, brought it back to 113-121 MB after every round.

So a daemon thread looks every ``interval`` seconds at the memory in use and trims when
it fell by ``threshold`` bytes or more from its highest since the last trim (the free
total is no trigger: pages a trim gave back still count as free in the arenas). It runs
off the event loop (a trim of a few hundred MB takes milliseconds of ``madvise``), and as
a daemon it never keeps the process from exiting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: Trim when the memory in use fell by this much since its high-water mark.
TRIM_THRESHOLD = 4 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallinfo2.restype = _MallInfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None  # musl, macOS, an old glibc: nothing to do
    return libc


def in_use(libc: Any) -> int:
    """Bytes allocated and not freed (arena chunks and mmapped blocks)."""
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class MemoryReturner(threading.Thread):
    def __init__(self, interval: float, threshold: int = TRIM_THRESHOLD) -> None:
        super().__init__(name="malloc-trim", daemon=True)
        self.interval = interval
        self.threshold = threshold
        self.trims = 0
        self._stop = threading.Event()
        self._libc = _glibc()

    @property
    def available(self) -> bool:
        return self._libc is not None

    def run(self) -> None:
        libc = self._libc
        assert libc is not None
        high = 0
        while not self._stop.wait(self.interval):
            try:
                used = in_use(libc)
                high = max(high, used)
                if high - used < self.threshold:
                    continue
                libc.malloc_trim(0)
                self.trims += 1
                log.debug("malloc_trimmed", freed_mb=round((high - used) / 1e6, 1))
                high = used
            except Exception:  # pragma: no cover - never let the helper die loudly
                log.warning("malloc_trim_failed", exc_info=True)
                return

    def stop(self) -> None:
        self._stop.set()


def start_memory_returner(interval: float) -> MemoryReturner | None:
    """Start the trimming thread (``interval`` ≤ 0 or not glibc: none)."""
    if interval <= 0:
        return None
    returner = MemoryReturner(interval)
    if not returner.available:
        log.info("malloc_trim_unavailable")
        return None
    returner.start()
    return returner
