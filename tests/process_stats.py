"""What a server holds, read from outside: a ``cero-api serve`` child's descriptors and RSS
from ``/proc``, any server's metrics from ``/metrics`` (the leak checks of the churn and
load tests, the refusal counts of the limit tests).

Test servers run with :data:`METRICS_TOKEN` as ``CERO_METRICS_TOKEN`` (``make_settings``,
``server_env``): a scrape of the API's listener sends :data:`METRICS_AUTH`, as an
operator's Prometheus would."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

#: ``CERO_METRICS_TOKEN`` of every test server (tests/conftest.py, tests/server_process.py).
METRICS_TOKEN = "test-metrics-token-" + "m" * 24
#: The header a scrape of ``/metrics`` on the API's own listener sends.
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


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
    text = await metrics_text(http, url)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def metrics_text(http: aiohttp.ClientSession, url: str) -> str:
    """``url``'s ``/metrics`` as Prometheus text, scraped with the metrics token."""
    async with http.get(url + "/metrics", headers=METRICS_AUTH) as resp:
        assert resp.status == 200, resp.status
        return await resp.text()


def total(metrics: dict[str, float], family: str) -> float:
    """The sum of a family's samples over all its label values."""
    return sum(v for k, v in metrics.items() if k == family or k.startswith(family + "{"))


def refusals_by_limit(metrics: dict[str, float]) -> dict[str, float]:
    """``cero_limit_refusals_total`` by its ``limit`` label."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.startswith("cero_limit_refusals_total{"):
            label = key.split('limit="', 1)[1].split('"', 1)[0]
            out[label] = out.get(label, 0.0) + value
    return out


async def refusals(http: aiohttp.ClientSession, url: str, limit: str) -> float:
    """``cero_limit_refusals_total{limit}`` as ``url``'s ``/metrics`` shows it now."""
    return refusals_by_limit(await scrape(http, url)).get(limit, 0.0)
