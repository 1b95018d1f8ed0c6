"""``python -m bench``: every scenario of issue 6 against the bare-aiohttp baselines, in one run.

Starts the Gemini stand-in, the Cero server (``bench.launch_server``: uvloop or plain
asyncio) and the bare baselines (``bench.baseline_ws`` / ``bench.baseline_sse``) as child
processes, drives them with client processes (``bench.clients``), prints a table and writes
``bench/results/<UTC time>.json``, ``.md`` and ``.png``. Everything it starts is stopped on
exit, Ctrl-C or error. See ``bench/README.md``.

Why one module of ~640 lines: it is the command line and the run's orchestration (the
order scenarios start and stop their processes in, and what a failed one leaves); the
scenarios and the report are modules of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.common import raise_nofile
from bench.scenarios import (
    Config,
    Env,
    Server,
    Spread,
    Target,
    client_cost,
    durable_commit_floor,
    fanout,
    idle_connections,
    time_to_first_token,
)

RESULTS = Path(__file__).resolve().parent / "results"
#: Scenario 2 with --procs N > 1: the shared Redis, each configuration its own key prefix.
REDIS_URL = "redis://127.0.0.1:6379/0"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _rates(text: str) -> list[float]:
    return [0.0 if x in ("fast", "0") else float(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="small counts, short windows (about 2 minutes)"
    )
    p.add_argument("--scenarios", default="1,2,3,4,5", help="which scenarios (default all)")
    p.add_argument("--duration", type=float, help="measured window per phase, s (default 8)")
    p.add_argument("--warmup", type=float, help="seconds between starting a stream and measuring")
    p.add_argument("--subs", type=_ints, help="scenario 1 subscriber counts (default 100,1000)")
    p.add_argument("--sse-subs", type=_ints, help="scenario 5 subscriber counts (default 100,1000)")
    p.add_argument(
        "--rates",
        type=_rates,
        help="token rates per phase, 'fast' = as fast as possible (default 50,fast)",
    )
    p.add_argument("--loops", help="server loops for scenario 1 (default uvloop,asyncio)")
    p.add_argument(
        "--convs", type=_ints, help="scenario 2 conversation counts (default 100,200,500)"
    )
    p.add_argument(
        "--engines",
        help="scenario 2 databases of the project (default sqlite,postgresql)",
    )
    p.add_argument(
        "--cost-convs",
        type=int,
        help="conversations (x 1 subscriber) of scenario 2's CPU-per-token row, beside the "
        "google-genai SDK's own CPU per chunk; 0 = skip (default 200)",
    )
    p.add_argument(
        "--end-wait",
        type=float,
        help="scenario 2: seconds past the answers' planned end to wait for every one to "
        "end (default 60)",
    )
    p.add_argument(
        "--profile-s2",
        action="store_true",
        help="py-spy the project server during scenario 2's largest count "
        "(bench/results/<stamp>-s2-<engine>-<convs>-profile.txt; perturbs that row a little)",
    )
    p.add_argument(
        "--profile-fanout",
        action="store_true",
        help="py-spy the project server during every row of scenarios 1 and 5 "
        "(bench/results/<stamp>-s<1|5>-<loop>-<subs>-<rate>-profile.txt, self-time top 20 "
        "in the output; costs the profiled rows a few per cent)",
    )
    p.add_argument(
        "--procs",
        type=_ints,
        help="scenario 2: server processes per configuration, e.g. 1,2; N > 1 = N "
        "`cero-api serve` processes in cluster mode (PostgreSQL + Redis "
        f"{REDIS_URL}, a fresh key prefix), starts and subscribers spread over them "
        "(default 1)",
    )
    p.add_argument(
        "--capacity",
        type=_ints,
        help="scenario 2's capacity row for these process counts, e.g. 1,2: the most "
        "conversations sustained at p99 <= 200 ms, delivered/sent >= 0.98 and no start "
        "refused (PostgreSQL; doubling then bisecting; default none)",
    )
    p.add_argument("--capacity-start", type=int, help="capacity search: first count (default 100)")
    p.add_argument(
        "--capacity-max", type=int, help="capacity search: largest count tried (default 1600)"
    )
    p.add_argument(
        "--capacity-steps", type=int, help="capacity search: most probes each (default 6)"
    )
    p.add_argument(
        "--capacity-budget",
        type=float,
        help="capacity search: seconds each, no probe begins past it (default 300)",
    )
    p.add_argument("--convs-subs", type=int, help="scenario 2 subscribers each (default 2)")
    p.add_argument("--convs-rate", type=float, help="scenario 2 tokens/s each (default 20)")
    p.add_argument("--idle", type=int, help="scenario 3 connections (default 10000)")
    p.add_argument("--turns", type=int, help="scenario 4 sequential turns per target (default 200)")
    p.add_argument("--client-procs", type=int, help="client processes per fan-out run (default 2)")
    p.add_argument(
        "--postgres",
        help="admin URL for creating the scenario-4 database "
        "(default postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile phase")
    p.add_argument("--budget", type=float, default=900.0, help="hard stop after this many seconds")
    args = p.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = Config(
            duration=1.5,
            warmup=0.6,
            s1_subs=[100],
            s5_subs=[100],
            loops=["uvloop"],
            s2_convs=[40],
            cost_convs=40,
            s2_end_wait=20.0,
            s3_conns=500,
            s3_procs=2,
            s4_turns=20,
            profile=False,
        )
    cfg.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for attr, value in (
        ("duration", args.duration),
        ("warmup", args.warmup),
        ("s1_subs", args.subs),
        ("s5_subs", args.sse_subs),
        ("rates", args.rates),
        ("s2_convs", args.convs),
        ("s2_subs", args.convs_subs),
        ("s2_rate", args.convs_rate),
        ("cost_convs", args.cost_convs),
        ("s2_end_wait", args.end_wait),
        ("s2_procs", args.procs),
        ("capacity_procs", args.capacity),
        ("capacity_start", args.capacity_start),
        ("capacity_max", args.capacity_max),
        ("capacity_steps", args.capacity_steps),
        ("capacity_budget", args.capacity_budget),
        ("s3_conns", args.idle),
        ("s4_turns", args.turns),
        ("client_procs", args.client_procs),
        ("postgres_admin", args.postgres),
    ):
        if value is not None:
            setattr(cfg, attr, value)
    if args.engines:
        cfg.s2_engines = [x.strip() for x in args.engines.split(",") if x.strip()]
    if args.loops:
        cfg.loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    if args.profile_s2:
        cfg.s2_profile = True
    if args.profile_fanout:
        cfg.fanout_profile = True
    if args.no_profile:
        cfg.profile = False
    return cfg, args


def log(message: str) -> None:
    print(message, flush=True)


async def run(cfg: Config, stamp: str) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    profile_summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cero-bench-") as tmp:
        env = Env(Path(tmp), cfg)
        try:
            await env.open()
            users = await env.seed(env.sqlite_url, 16)
            scen = cfg.scenarios
            procs = cfg.client_procs

            async def fresh(
                kind: str, loop: str = "uvloop", database: str = "", servers_n: int = 1
            ) -> list[Server]:
                # A fresh process per setup: an as-fast phase can leave a server busy.
                if kind != "project":
                    return [await env.start_baseline(kind)]
                if servers_n <= 1:
                    return [await env.start_project(database or env.sqlite_url, loop)]
                # Cluster mode: N processes on one PostgreSQL database and Redis, a key
                # prefix of their own so no earlier run's leases or logs are seen.
                extra = {
                    "CERO_REDIS_URL": REDIS_URL,
                    "CERO_REDIS_PREFIX": f"cerobench:{secrets.token_hex(4)}:",
                }
                started: list[Server] = []
                try:
                    for _ in range(servers_n):
                        started.append(await env.start_project(database, loop, extra))
                except BaseException:
                    for srv in started:
                        env.stop(srv)
                    raise
                return started

            async def setup(
                scenario: str,
                transport: str,
                kind: str,
                n: int,
                rooms_n: int,
                rates: list[float],
                loop: str = "uvloop",
                warmup: float = cfg.warmup,
                profile: Path | None = None,
                database: str = "",
                owners: list[tuple[str, str]] | None = None,
                finish: bool = False,
                spy: Path | None = None,
                servers_n: int = 1,
                pool: list[tuple[str, str]] | None = None,
            ) -> list[dict[str, Any]]:
                srvs = await fresh(kind, loop, database, servers_n)
                fanout_spy = cfg.fanout_profile and kind == "project" and scenario in ("1", "5")
                if fanout_spy:
                    spy = RESULTS / f"{stamp}-s{scenario}-{loop}-{n}-{{rate}}-profile.txt"
                try:
                    t = Target(env, srvs[0]) if len(srvs) == 1 else Spread(env, srvs)
                    t_rooms = time.monotonic()
                    if pool is None:
                        rooms = await t.create_rooms(rooms_n, owners or users)
                    else:
                        # The capacity search reuses conversations from probe to probe
                        # (same database); only the missing ones are created.
                        if len(pool) < rooms_n:
                            pool += await t.create_rooms(rooms_n - len(pool), owners or users)
                        rooms = pool[:rooms_n]
                        if isinstance(t, Spread):
                            t.adopt(rooms)
                    if rooms_n > 50:
                        log(
                            f"    {rooms_n} conversations ready in "
                            f"{time.monotonic() - t_rooms:.1f}s"
                        )
                    rows = await fanout(
                        env,
                        t,
                        scenario=scenario,
                        transport=transport,
                        rooms=rooms,
                        subs_per_room=n,
                        rates=rates,
                        non_reader=kind == "project" and scenario in "15",
                        procs=procs,
                        warmup=warmup,
                        profile=profile,
                        finish=finish and kind == "project",
                        spy=spy,
                        log=log,
                    )
                finally:
                    for srv in srvs:
                        env.stop(srv)
                if fanout_spy:
                    for row in rows:
                        if row.get("profile"):
                            row["profile_summary"] = report.summarize_profile(
                                Path(row["profile"]), top=20
                            )
                return rows

            if "1" in scen:
                log("scenario 1: one conversation, WebSocket fan-out")
                for n in cfg.s1_subs:
                    runs += await setup("1", "ws", "ws", n, 1, cfg.rates)
                    for loop in cfg.loops:
                        rates = cfg.rates if loop == "uvloop" else [r for r in cfg.rates if r <= 0]
                        runs += await setup("1", "ws", "project", n, 1, rates or cfg.rates, loop)
                if cfg.profile:
                    log("profile: py-spy on the server, scenario 1 as fast as possible")
                    profile = RESULTS / f"{stamp}-profile.txt"
                    await setup("1", "ws", "project", max(cfg.s1_subs), 1, [0.0], profile=profile)
                    profile_summary = report.summarize_profile(profile)

            if "5" in scen:
                log("scenario 5: one conversation, SSE fan-out")
                for n in cfg.s5_subs:
                    runs += await setup("5", "sse", "sse", n, 1, cfg.rates)
                    runs += await setup("5", "sse", "project", n, 1, cfg.rates)

            if "2" in scen:
                runs += await many_conversations(env, cfg, users, setup, stamp)

            if "3" in scen:
                log(f"scenario 3: {cfg.s3_conns} idle authenticated WebSocket connections")
                starts: tuple[Callable[[], Awaitable[Server]], ...] = (
                    lambda: env.start_baseline("ws"),
                    lambda: env.start_project(env.sqlite_url),
                )
                for start in starts:
                    srv = await start()
                    runs.append(
                        await idle_connections(env, srv, users, cfg.s3_conns, cfg.s3_procs, log=log)
                    )
                    env.stop(srv)

            if "4" in scen:
                log(f"scenario 4: time to first token, {cfg.s4_turns} sequential turns")
                baseline = await env.start_baseline("ws")
                runs.append(await time_to_first_token(env, baseline, [], cfg.s4_turns, log=log))
                env.stop(baseline)
                server = await env.start_project(env.sqlite_url)
                runs.append(await time_to_first_token(env, server, users, cfg.s4_turns, log=log))
                env.stop(server)
                try:
                    pg_url = await env.new_postgres()
                except Exception as exc:
                    log(f"    PostgreSQL unavailable, skipped: {exc!r}")
                else:
                    pg_users = await env.seed(pg_url, 4)
                    server = await env.start_project(pg_url)
                    row = await time_to_first_token(env, server, pg_users, cfg.s4_turns, log=log)
                    env.stop(server)
                    # The machine's durable-commit floor right after, same database.
                    row["commit_floor"] = await durable_commit_floor(pg_url)
                    log(
                        "      durable one-row commit (asyncpg, 200 sequential): "
                        f"p50 {row['commit_floor']['p50_ms']:.2f} ms "
                        f"p90 {row['commit_floor']['p90_ms']:.2f} ms"
                    )
                    runs.append(row)
        finally:
            await env.close()
    return {"runs": runs, "profile": profile_summary}


async def many_conversations(
    env: Env, cfg: Config, users: list[tuple[str, str]], setup: Any, stamp: str
) -> list[dict[str, Any]]:
    """Scenario 2 at every conversation count, on each engine, and its CPU-per-token row."""
    runs: list[dict[str, Any]] = []
    engines: list[tuple[str, list[tuple[str, str]]]] = []
    for engine in cfg.s2_engines:
        if engine == "sqlite":
            engines.append((env.sqlite_url, users))
            continue
        try:
            pg_url = await env.new_postgres()
            engines.append((pg_url, await env.seed(pg_url, 16)))
        except Exception as exc:
            log(f"    PostgreSQL unavailable, scenario 2 runs on SQLite only: {exc!r}")
    rate = cfg.s2_rate
    for convs in cfg.s2_convs:
        log(
            f"scenario 2: {convs} conversations x {cfg.s2_subs} subscribers, {rate:g} tokens/s each"
        )
        warmup = max(cfg.warmup, 1.0 if convs <= 50 else 3.0)
        runs += await setup("2", "ws", "ws", cfg.s2_subs, convs, [rate], warmup=warmup)
        for url, owners in engines:
            for procs_n in cfg.s2_procs:
                if procs_n > 1 and not url.startswith("postgres"):
                    log(f"    --procs {procs_n}: cluster mode needs PostgreSQL, not {url[:6]}")
                    continue
                if procs_n > 1:
                    log(f"    {procs_n} processes in cluster mode (Redis {REDIS_URL})")
                spy = None
                if cfg.s2_profile and convs == max(cfg.s2_convs):
                    spy = RESULTS / f"{stamp}-s2-{url.split('://')[0]}-{convs}-profile.txt"
                rows = await setup(
                    "2",
                    "ws",
                    "project",
                    cfg.s2_subs,
                    convs,
                    [rate],
                    warmup=warmup,
                    database=url,
                    owners=owners,
                    finish=True,
                    spy=spy,
                    servers_n=procs_n,
                )
                for row in rows:
                    if spy is not None:
                        row["profile_summary"] = report.summarize_profile(spy, top=20)
                runs += rows
    if cfg.cost_convs:
        convs = cfg.cost_convs
        warmup = max(cfg.warmup, 1.0 if convs <= 50 else 3.0)
        log(
            f"scenario 2, CPU per streamed token: {convs} conversations x 1 subscriber, "
            f"{rate:g} tokens/s each, beside the google-genai SDK alone"
        )
        for url, owners in engines:
            runs += await setup(
                "2c", "ws", "project", 1, convs, [rate], warmup=warmup, database=url, owners=owners
            )
        for client in ("sdk", "raw"):
            runs.append(await client_cost(env, client, convs, rate, warmup, cfg.duration, log))
    pg = next(((u, o) for u, o in engines if u.startswith("postgres")), None)
    if cfg.capacity_procs and pg is None:
        log("    capacity row skipped: it runs on PostgreSQL, which is unavailable")
    for procs_n in cfg.capacity_procs if pg is not None else []:
        assert pg is not None
        runs.append(await capacity(cfg, setup, pg[0], pg[1], procs_n))
    return runs


def _sustained(row: dict[str, Any]) -> bool:
    """The capacity row's criteria: p99 <= 200 ms, delivered/sent >= 0.98, no start failed."""
    p99 = row.get("p99_ms")
    ratio = row.get("delivered_ratio")
    return (
        p99 is not None
        and p99 <= CAPACITY_P99_MS
        and ratio is not None
        and ratio >= CAPACITY_DELIVERED
        and not row.get("starts_failed")
    )


CAPACITY_P99_MS = 200.0
CAPACITY_DELIVERED = 0.98


async def capacity(
    cfg: Config, setup: Any, url: str, owners: list[tuple[str, str]], procs_n: int
) -> dict[str, Any]:
    """The most conversations (x ``cfg.s2_subs`` subscribers, ``cfg.s2_rate`` tok/s) that
    ``procs_n`` processes sustain: scenario-2 probes from ``capacity_start``, doubling while
    they pass, then bisecting between the last pass and the first failure, until the gap is
    under 10 % (or 20 conversations), ``capacity_steps`` probes or ``capacity_budget`` s.
    Each probe is a full scenario-2 row on fresh server processes; the conversations are
    reused from probe to probe."""
    rate = cfg.s2_rate
    log(
        f"scenario 2 capacity, {procs_n} process(es): most conversations x {cfg.s2_subs} "
        f"subscribers at {rate:g} tok/s with p99 <= {CAPACITY_P99_MS:g} ms, delivered/sent "
        f">= {CAPACITY_DELIVERED}, no start refused"
    )
    pool: list[tuple[str, str]] = []
    probes: list[dict[str, Any]] = []
    deadline = time.monotonic() + cfg.capacity_budget
    passed, failed_at = 0, 0
    n = cfg.capacity_start
    stopped = "steps"
    for _ in range(cfg.capacity_steps):
        if time.monotonic() > deadline:
            stopped = "budget"
            break
        warmup = max(cfg.warmup, 1.0 if n <= 50 else 3.0)
        rows = await setup(
            "2",
            "ws",
            "project",
            cfg.s2_subs,
            n,
            [rate],
            warmup=warmup,
            database=url,
            owners=owners,
            finish=True,
            servers_n=procs_n,
            pool=pool,
        )
        row = rows[0]
        ok = _sustained(row)
        probes.append(
            {
                "conversations": n,
                "sustained": ok,
                "p99_ms": row.get("p99_ms"),
                "delivered_ratio": row.get("delivered_ratio"),
                "starts_failed": row.get("starts_failed"),
                "starts_errors": row.get("starts_errors"),
                "server_cpu_pct": row.get("server_cpu_pct"),
                "machine_cpu_pct": row.get("machine_cpu_pct"),
                "server_us_per_token": row.get("server_us_per_token"),
                "answers_not_complete": row.get("answers_not_complete"),
            }
        )
        log(f"    capacity probe {n}: {'sustained' if ok else 'not sustained'}")
        if ok:
            passed = max(passed, n)
        else:
            failed_at = n if not failed_at else min(failed_at, n)
        if not failed_at:
            if n >= cfg.capacity_max:
                stopped = "max"
                break
            n = min(2 * n, cfg.capacity_max)
            continue
        if failed_at - passed <= max(20, passed // 10):
            stopped = "resolution"
            break
        n = (passed + failed_at) // 2
    row_out: dict[str, Any] = {
        "scenario": "2cap",
        "target": "project",
        "transport": "ws",
        "loop": "uvloop",
        "database": url.split("://")[0],
        "procs": procs_n,
        "subscribers_each": cfg.s2_subs,
        "rate": rate,
        "capacity": passed,
        "first_failed": failed_at or None,
        "stopped": stopped,
        "probes": probes,
        "loadavg": _loadavg(),
    }
    log(
        f"    capacity, {procs_n} process(es): {passed} conversations "
        f"(first not sustained: {failed_at or '-'}; stopped by {stopped})"
    )
    return row_out


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    started = time.monotonic()

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = asyncio.run(asyncio.wait_for(run(cfg, stamp), args.budget))
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"stopped: the run exceeded --budget {args.budget:.0f}s", file=sys.stderr)
        return 1
    runs = result["runs"]
    report.add_ratios(runs)
    targets = report.check_targets(runs)
    info = report.machine()
    elapsed = time.monotonic() - started
    text = report.table(runs, targets)
    header = (
        f"Machine: {info['nproc']} CPUs, {info['cpu_model']}, Python {info['python']}, "
        f"aiohttp {info['aiohttp']}, kernel {info['kernel']}; run {stamp} "
        f"({'quick' if args.quick else 'full'}, {elapsed:.0f} s)"
    )
    print()
    print(header)
    print()
    print(text)
    for row in runs:
        spied = row.get("profile_summary")
        if spied:
            if row["scenario"] == "2":
                during = f"scenario 2, {row['conversations']} conversations on {row['database']}"
            else:
                during = (
                    f"scenario {row['scenario']}, {row['transport']}, {row['subscribers']} "
                    f"subscribers, {row['rate']} tokens/s, {row['loop']}"
                )
            lines = [
                "",
                f"Profile (py-spy, server during {during}, {spied['samples']} samples), "
                "self time top 20:",
                "",
                *(f"    {pct:5.1f}%  {name}" for name, pct in spied["self_pct"]),
                "",
                "Inclusive: " + "; ".join(f"{n} {p}%" for n, p in spied["inclusive_pct"]),
            ]
            print("\n".join(lines))
            text += "\n" + "\n".join(lines)
    profile = result["profile"]
    if profile:
        print()
        print(f"Profile (py-spy, server during scenario 1 as-fast, {profile['samples']} samples)")
        print("  self time:      " + "; ".join(f"{n} {p}%" for n, p in profile["self_pct"][:10]))
        print(
            "  inclusive time: " + "; ".join(f"{n} {p}%" for n, p in profile["inclusive_pct"][:12])
        )
    out = {
        "stamp": stamp,
        "machine": info,
        "config": vars(cfg),
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "runs": runs,
        "targets": targets,
        "profile": profile,
    }
    (RESULTS / f"{stamp}.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    (RESULTS / f"{stamp}.md").write_text(header + "\n\n" + text + "\n")
    with contextlib.suppress(Exception):
        report.plot(runs, RESULTS / f"{stamp}.png")
    print(f"\nwrote bench/results/{stamp}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
