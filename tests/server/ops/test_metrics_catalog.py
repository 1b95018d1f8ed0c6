"""docs/metrics.md's table (under ``## Metrics``) and ``/metrics`` agree, both ways.

Every ``cero_*`` family a real app exposes is documented in the table, and every
documented family is exposed: in one process (SQLite, no Redis) the rows of mode ``any``,
in cluster mode (PostgreSQL and Redis) all of them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster_harness import REDIS_URL, require_redis
from tests.conftest import Live, live_app, require_postgres
from tests.process_stats import METRICS_AUTH

pytestmark = pytest.mark.asyncio(loop_scope="module")

METRICS_DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def documented() -> dict[str, tuple[str, str]]:
    """name → (type, mode) from the table under ``## Metrics``."""
    text = METRICS_DOC.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `cero_"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        name, kind, _labels, mode = cells[0].strip("`"), cells[1], cells[2], cells[3]
        assert mode in ("any", "cluster"), line
        assert name not in rows, f"{name} documented twice"
        rows[name] = (kind, mode)
    return rows


async def exposed(live: Live) -> dict[str, str]:
    """name → type of the ``cero_*`` families ``/metrics`` serves, by their exposed name
    (counters with ``_total``); prometheus-client's ``_created`` companions left out."""
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/metrics", headers=METRICS_AUTH) as r:
            assert r.status == 200
            text = await r.text()
    families: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE cero_"):
            _, _, name, kind = line.split()
            families[name] = kind
    created = {
        name
        for name, kind in families.items()
        if name.endswith("_created")
        and kind == "gauge"
        and (name.removesuffix("_created") in families or f"{name[:-8]}_total" in families)
    }
    # The parser agrees it is valid exposition (and names every family).
    assert list(text_string_to_metric_families(text))
    return {name: kind for name, kind in families.items() if name not in created}


def compare(served: dict[str, str], expected: dict[str, tuple[str, str]]) -> None:
    assert sorted(set(served) - set(expected)) == [], "exposed but not in docs/metrics.md's table"
    assert sorted(set(expected) - set(served)) == [], "in docs/metrics.md's table but not exposed"
    for name, kind in served.items():
        assert expected[name][0] == kind, f"{name}: docs/metrics.md says {expected[name][0]}"


async def test_the_table_is_readable() -> None:
    rows = documented()
    assert len(rows) >= 40
    assert rows["cero_time_to_first_token_seconds"] == ("histogram", "any")
    assert rows["cero_cluster_relay_lag_seconds"] == ("histogram", "cluster")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def one_process(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    path = tmp_path_factory.mktemp("catalog") / "cero.db"
    async with live_app(f"sqlite:///{path}") as live:
        yield live


async def test_one_process_exposes_exactly_the_documented_families(one_process: Live) -> None:
    expected = {name: row for name, row in documented().items() if row[1] == "any"}
    compare(await exposed(one_process), expected)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster_process(postgres_url: str) -> AsyncIterator[Live]:
    await require_postgres()
    await require_redis()
    prefix = f"cerotest:{secrets.token_hex(6)}:"
    async with live_app(postgres_url, redis_url=REDIS_URL, redis_prefix=prefix) as live:
        yield live


@pytest.mark.postgres
async def test_cluster_mode_exposes_every_documented_family(cluster_process: Live) -> None:
    compare(await exposed(cluster_process), documented())
