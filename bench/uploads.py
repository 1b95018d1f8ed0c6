"""Upload throughput and the server's memory during it (issue 26).

N users (``--users``, default 20) each upload one file of M MB (``--mb``, default 20) at
once to ``POST /api/attachments``, through ``cero chat --attach``'s own upload code
(:func:`client.attach.upload`: aiohttp's file payload, streamed from disk), first to the
floor — a bare aiohttp sink that streams each file to disk with its SHA-256
(``bench/upload_sink.py``) — then to ``cero-api serve`` (``bench/launch_server.py``,
uvloop, SQLite or a fresh PostgreSQL database, the ``files`` store), both started fresh
in the same run, ``--rounds`` times alternating. Per row: MB/s (N × M MB ÷ the wall time
from the first byte sent to the last answer), process CPU seconds over the same span (the
server's, and this process's: the clients), and
RSS before (after one small warm-up upload), peak (psutil, every 20 ms) and after (2 s
later: the server trims its allocator every 0.5 s here). The files are text, different
per user and round (the server checks the whole file is UTF-8: its costliest type),
written before each row and flushed (``os.sync``) before it is measured; both servers
write to the same disk (a temp folder), so the disk's write-back is part of what they do.

Run: ``.venv/bin/python -m bench.uploads`` (``--users 20 --mb 20 --rounds 2 --engine
sqlite``); results in ``bench/results/uploads-<UTC time>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.common import HOST, cpu_seconds, free_port, rss_bytes, wait_http
from bench.scenarios import Config, Env
from client.api import Api
from client.attach import LocalFile, upload
from client.output import Output

MB = 1_000_000
MIB = 1 << 20


def log(message: str) -> None:
    print(message, flush=True)


@dataclass
class Target:
    """One server to upload to: the project or the floor."""

    kind: str
    url: str
    pid: int
    tokens: list[str]


def write_payloads(folder: Path, users: int, size: int, tag: str) -> list[LocalFile]:
    """One text file per user, different from every other (each is stored: no shared
    hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(users):
        line = f"{tag} user {n}: the quick brown fox jumps over the lazy dog\n".encode()
        path = folder / f"{tag}-{n}.txt"
        with path.open("wb") as f:
            block = line * (MIB // len(line) + 1)
            left = size
            while left > 0:
                piece = block[: min(left, len(block))]
                f.write(piece)
                left -= len(piece)
        files.append(LocalFile(path, size))
    return files


async def upload_one(url: str, token: str, local: LocalFile) -> int:
    out = Output(io.BytesIO(), io.StringIO())
    async with Api(url, token) as api:
        attachment = await upload(api, out, local)
    return int(attachment["size"])


async def measure(target: Target, files: list[LocalFile], warm: LocalFile) -> dict[str, Any]:
    await upload_one(target.url, target.tokens[0], warm)  # imports, pools, caches
    # The payloads were just written: flushed now, their write-back is not measured.
    await asyncio.to_thread(os.sync)
    await asyncio.sleep(1.0)
    rss0 = rss_bytes(target.pid)
    peak = rss0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, rss_bytes(target.pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.get_running_loop().create_task(sample())
    cpu0, load0, client0 = cpu_seconds(target.pid), os.getloadavg()[0], time.process_time()
    started = time.perf_counter()
    sizes = await asyncio.gather(
        *(
            upload_one(target.url, token, local)
            for token, local in zip(target.tokens, files, strict=True)
        )
    )
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(target.pid) - cpu0
    client_cpu = time.process_time() - client0
    load1 = os.getloadavg()[0]
    done.set()
    await sampler
    assert sizes == [f.size for f in files], sizes
    await asyncio.sleep(2.0)
    rss1 = rss_bytes(target.pid)
    total = sum(sizes)
    return {
        "kind": target.kind,
        "users": len(files),
        "bytes": total,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(total / MB / elapsed, 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_gb": round(cpu / (total / 1e9), 2),
        "client_cpu_s": round(client_cpu, 2),
        "rss_before_mib": round(rss0 / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_after_mib": round(rss1 / MIB, 1),
        "load_before": round(load0, 2),
        "load_after": round(load1, 2),
    }


async def start_floor(env: Env, tmp: Path) -> Target:
    port = free_port()
    proc = env.children.start(
        ["-m", "bench.upload_sink", "--port", str(port), "--dir", str(tmp / "sink")],
        log=tmp / f"sink-{port}.log",
    )
    url = f"http://{HOST}:{port}"
    await asyncio.to_thread(wait_http, url + "/healthz", 30, proc)
    return Target("floor", url, proc.pid, [])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cero-bench-uploads-"))
    env = Env(tmp, Config())
    await env.open()
    rows: list[dict[str, Any]] = []
    try:
        database_url = env.sqlite_url if args.engine == "sqlite" else await env.new_postgres()
        users = await env.seed(database_url, args.users)
        tokens = [token for token, _ in users]
        warm_path = tmp / "warm.txt"
        warm_path.write_bytes(b"warm up\n")
        warm = LocalFile(warm_path, warm_path.stat().st_size)
        size = int(args.mb * MB)
        store = tmp / "store"
        quota = str(max(500 * MIB, 4 * size * (args.rounds + 1)))
        for r in range(args.rounds):
            for kind in ("floor", "project"):
                files = write_payloads(tmp / "payloads", args.users, size, f"r{r}{kind}")
                if kind == "floor":
                    target = await start_floor(env, tmp)
                else:
                    server = await env.start_project(
                        database_url,
                        extra_env={
                            "CERO_ATTACHMENT_DIR": str(store),
                            "CERO_ATTACHMENT_MAX_BYTES": str(max(size, 20 * MIB)),
                            "CERO_ATTACHMENT_QUOTA_BYTES": quota,
                            "CERO_MALLOC_TRIM_INTERVAL": "0.5",
                        },
                    )
                    target = Target("project", server.url, server.proc.pid, tokens)
                if not target.tokens:
                    target.tokens = tokens
                try:
                    row = await measure(target, files, warm)
                finally:
                    proc = next(p for p in env.children.procs if p.pid == target.pid)
                    env.children.stop(proc)
                    shutil.rmtree(tmp / "payloads", ignore_errors=True)
                    shutil.rmtree(tmp / "sink", ignore_errors=True)
                row["round"] = r
                row["engine"] = args.engine if kind == "project" else "-"
                rows.append(row)
                log(
                    f"  round {r} {kind:7}: {row['mb_per_s']:7.1f} MB/s in {row['seconds']:.2f} s,"
                    f" cpu {row['cpu_s']:.2f} s, rss {row['rss_before_mib']} -> peak "
                    f"{row['rss_peak_mib']} -> {row['rss_after_mib']} MiB, load "
                    f"{row['load_before']}-{row['load_after']}"
                )
    finally:
        with contextlib.suppress(Exception):
            await env.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "users": args.users,
            "mb": args.mb,
            "rounds": args.rounds,
            "engine": args.engine,
        },
        "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
        "rows": rows,
        "summary": summary(rows),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(kind: str, key: str) -> float:
        return round(float(statistics.median(r[key] for r in rows if r["kind"] == kind)), 2)

    project, floor = median("project", "mb_per_s"), median("floor", "mb_per_s")
    return {
        "project_mb_per_s": project,
        "floor_mb_per_s": floor,
        "ratio": round(project / floor, 2),
        "project_cpu_s_per_gb": median("project", "cpu_s_per_gb"),
        "floor_cpu_s_per_gb": median("floor", "cpu_s_per_gb"),
        "project_rss_peak_minus_before_mib": round(
            max(r["rss_peak_mib"] - r["rss_before_mib"] for r in rows if r["kind"] == "project"),
            1,
        ),
        "project_rss_after_minus_before_mib": round(
            max(r["rss_after_mib"] - r["rss_before_mib"] for r in rows if r["kind"] == "project"),
            1,
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"# Uploads, {c['users']} users × {c['mb']:g} MB at once — {result['when']}",
        "",
        "| round | target | engine | MB/s | seconds | CPU s | CPU s/GB | client CPU s | RSS before "
        "→ peak → after (MiB) | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['round']} | {r['kind']} | {r['engine']} | {r['mb_per_s']} | {r['seconds']} "
            f"| {r['cpu_s']} | {r['cpu_s_per_gb']} | {r['client_cpu_s']} | {r['rss_before_mib']} → "
            f"{r['rss_peak_mib']} → {r['rss_after_mib']} | {r['load_before']}–"
            f"{r['load_after']} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"Median: project {s['project_mb_per_s']} MB/s, floor {s['floor_mb_per_s']} MB/s, "
        f"ratio {s['ratio']}; CPU s/GB {s['project_cpu_s_per_gb']} vs "
        f"{s['floor_cpu_s_per_gb']}; project RSS peak − before ≤ "
        f"{s['project_rss_peak_minus_before_mib']} MiB, after − before ≤ "
        f"{s['project_rss_after_minus_before_mib']} MiB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20, help="uploads at once (default 20)")
    parser.add_argument("--mb", type=float, default=20.0, help="MB per upload (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="floor, project pairs (default 2)")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    stamp = result["when"].replace(":", "-")
    folder = Path(__file__).resolve().parent / "results"
    (folder / f"uploads-{stamp}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (folder / f"uploads-{stamp}.md").write_text(markdown(result))
    log(markdown(result))
    log(f"written {folder / f'uploads-{stamp}.json'} and .md")


if __name__ == "__main__":
    main()
