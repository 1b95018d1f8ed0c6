"""What a ``cero-api serve`` child holds, read from outside: its descriptors and RSS from
``/proc``, its metrics from ``/metrics``. For the leak checks of the churn and load tests."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp


def fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample of ``url``'s ``/metrics``, by its name with labels."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def total(metrics: dict[str, float], family: str) -> float:
    """The sum of a family's samples over all its label values."""
    return sum(v for k, v in metrics.items() if k == family or k.startswith(family + "{"))
