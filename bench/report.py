"""Results: ratios against the baseline, target checks, the table, JSON, the PNG plot and a
summary of a py-spy profile.

Why one module of ~590 lines: every output of a run reads the same rows and targets; split
by format, each part would repeat the targets' arithmetic."""

from __future__ import annotations

import platform
import re
from collections import Counter
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import aiohttp

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
    }


def _key(row: Row) -> tuple[Any, ...]:
    return (row["scenario"], row["transport"], row.get("subscribers"), row.get("rate"))


def add_ratios(runs: list[Row]) -> None:
    """``ratio``: project deliveries/s over the baseline's of the same scenario, transport,
    subscriber count and rate (scenario 3: KB per connection; 4: added TTFT)."""
    base = {_key(r): r for r in runs if r["target"] == "baseline" and r["scenario"] in "125"}
    for row in runs:
        if row["target"] != "project":
            continue
        if row["scenario"] in ("1", "2", "5"):
            b = base.get(_key(row))
            if b and b["deliveries_per_s"]:
                row["ratio"] = round(row["deliveries_per_s"] / b["deliveries_per_s"], 3)
                # Deliveries per second of server CPU: robust to what else the machine runs.
                if row.get("deliveries_per_cpu_s") and b.get("deliveries_per_cpu_s"):
                    row["cpu_ratio"] = round(
                        row["deliveries_per_cpu_s"] / b["deliveries_per_cpu_s"], 3
                    )
                if row.get("p99_ms") and b.get("p99_ms"):
                    row["p99_ratio"] = round(row["p99_ms"] / b["p99_ms"], 3)
    # Cost row: the server's CPU per streamed token over the SDK's (and raw aiohttp's) own
    # CPU per chunk of the same streams, measured in the same run.
    sdk = next((r for r in runs if r["scenario"] == "2c" and r["target"] == "sdk"), None)
    raw = next((r for r in runs if r["scenario"] == "2c" and r["target"] == "raw"), None)
    for row in runs:
        if row["scenario"] != "2c" or row["target"] == "sdk":
            continue
        us = row.get("server_us_per_token") if row["target"] == "project" else None
        if row["target"] == "raw":
            us = row.get("us_per_chunk")
        if us is not None and sdk and sdk.get("us_per_chunk"):
            row["ratio"] = round(us / sdk["us_per_chunk"], 2)
        if us is not None and raw and raw.get("us_per_chunk") and row["target"] == "project":
            row["ratio_raw"] = round(us / raw["us_per_chunk"], 2)
    # Cluster mode: server CPU per delivered token (summed over the processes) over one
    # process's at the same conversation count, engine and subscribers, same run.
    one = {
        (r.get("database"), r["conversations"], r["subscribers"]): r
        for r in runs
        if r["scenario"] == "2" and r["target"] == "project" and r.get("procs", 1) == 1
    }
    for row in runs:
        if row["scenario"] != "2" or row["target"] != "project" or row.get("procs", 1) == 1:
            continue
        b = one.get((row.get("database"), row["conversations"], row["subscribers"]))
        if b and b.get("server_us_per_token") and row.get("server_us_per_token"):
            row["cpu_vs_one_proc"] = round(row["server_us_per_token"] / b["server_us_per_token"], 2)
    caps = {r["procs"]: r for r in runs if r["scenario"] == "2cap"}
    for procs, row in caps.items():
        if procs > 1 and caps.get(1) and caps[1]["capacity"]:
            row["vs_one_proc"] = round(row["capacity"] / caps[1]["capacity"], 2)
    b3 = next((r for r in runs if r["scenario"] == "3" and r["target"] == "baseline"), None)
    b4 = next((r for r in runs if r["scenario"] == "4" and r["target"] == "baseline"), None)
    for row in runs:
        if row["target"] != "project":
            continue
        if row["scenario"] == "3" and b3 and b3["kb_per_connection"]:
            row["ratio"] = round(row["kb_per_connection"] / b3["kb_per_connection"], 2)
        if row["scenario"] == "4" and b4 and b4["added_p50_ms"]:
            row["ratio"] = round(row["added_p50_ms"] / b4["added_p50_ms"], 2)


def _p50(ms: float) -> str:
    """A median inside the histogram's first bucket (0–50 µs) is only known to be there."""
    return "< 0.05" if ms <= 0.05 else _f(ms, 3)


def phase_lines(rows: list[Row]) -> list[str]:
    """Scenario 4's phase breakdown (``cero_turn_phase_seconds``), one column per engine:
    p50 (interpolated in the histogram's buckets) / mean (exact) in ms."""
    if not rows:
        return []
    names: list[str] = []
    for r in rows:
        names += [n for n in r["phases"] if n not in names]
    head = " | ".join(f"{r['database']} n | p50 ms | mean ms" for r in rows)
    lines = [
        "",
        "#### Where a turn's time goes on the server (scenario 4, `cero_turn_phase_seconds`)",
        "",
        f"| phase | {head} |",
        "|---|" + "---|---|---|" * len(rows),
    ]
    for name in names:
        cells = []
        for r in rows:
            ph = r["phases"].get(name)
            cells.append(
                "- | - | -"
                if ph is None
                else f"{ph['count']:.0f} | {_p50(ph['p50_ms'])} | {_f(ph['mean_ms'], 3)}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def check_targets(runs: list[Row]) -> list[Row]:
    out: list[Row] = []

    def add(
        name: str,
        value: float | None,
        limit: float,
        higher_is_better: bool,
        unit: str,
        met: bool | None = None,
    ) -> None:
        if value is None:
            out.append({"target": name, "value": None, "limit": limit, "met": None, "unit": unit})
            return
        if met is None:
            met = value >= limit if higher_is_better else value <= limit
        margin = (value - limit) if higher_is_better else (limit - value)
        out.append(
            {
                "target": name,
                "value": round(value, 3),
                "limit": limit,
                "met": met,
                "margin": round(margin, 3),
                "unit": unit,
            }
        )

    uv = [r for r in runs if r["target"] == "project" and r.get("loop") == "uvloop"]
    for r in uv:
        if r["scenario"] == "1" and r["rate"] == "fast":
            add(
                f"S1 fan-out fast, {r['subscribers']} subs (+non-reader) vs baseline",
                r.get("ratio"),
                0.8,
                True,
                "ratio",
            )
            add(
                f"S1 fan-out fast, {r['subscribers']} subs (+non-reader), deliveries per "
                "server CPU-second vs baseline",
                r.get("cpu_ratio"),
                0.8,
                True,
                "ratio",
            )
        if r["scenario"] == "1" and r["rate"] == 50.0 and r["subscribers"] >= 1000:
            add(f"S1 p99 at 50 tok/s x {r['subscribers']} subs", r.get("p99_ms"), 50, False, "ms")
        if r["scenario"] == "2":
            where = f"{r['conversations']} convs, {r['subscribers']} subs, {r['database']}"
            if r.get("procs", 1) > 1:
                where += f", {r['procs']} procs (cluster)"
                add(
                    f"S2 cluster CPU per token vs 1 process (issue 21), {where}",
                    r.get("cpu_vs_one_proc"),
                    1.2,
                    False,
                    "ratio",
                )
                add(
                    f"S2 cluster 5xx starts (issue 21), {where}",
                    sum(v for k, v in (r.get("starts_errors") or {}).items() if k[:1] == "5"),
                    0,
                    False,
                    "starts",
                )
            ratio = r.get("delivered_ratio")
            ended = r.get("answers_not_complete") == 0
            # Past saturation the server may deliver less than was sent, but every
            # started answer must still end: that also meets the target.
            cpu_bound = (r.get("server_cpu_pct") or 0) >= 90 or (
                r.get("machine_cpu_pct") or 0
            ) >= 90
            add(
                f"S2 delivered/sent, {where}"
                + (" (CPU-bound: or every answer ends)" if cpu_bound else ""),
                ratio,
                0.98,
                True,
                "ratio",
                met=None if ratio is None else ratio >= 0.98 or (cpu_bound and ended),
            )
            if "answers_not_complete" in r:
                add(
                    f"S2 started answers not ended complete, {where}",
                    r["answers_not_complete"],
                    0,
                    False,
                    "answers",
                )
                add(f"S2 starts failed, {where}", r.get("starts_failed"), 0, False, "starts")
            if r["conversations"] == 100:
                add(f"S2 p99 (issue 21), {where}", r.get("p99_ms"), 50, False, "ms")
        if r["scenario"] == "2c" and r["target"] == "project":
            add(
                f"S2 server CPU per token vs SDK per chunk, {r['conversations']} convs, "
                f"{r['database']}",
                r.get("ratio"),
                2,
                False,
                "ratio",
            )
            add(
                f"S2 server CPU per token vs raw aiohttp + orjson per chunk (issue 21), "
                f"{r['conversations']} convs, {r['database']}",
                r.get("ratio_raw"),
                1.5,
                False,
                "ratio",
            )
        if r["scenario"] == "2cap" and r.get("procs", 1) > 1:
            add(
                f"S2 capacity, {r['procs']} procs vs 1 (issue 21)",
                r.get("vs_one_proc"),
                1.6,
                True,
                "ratio",
            )
        if r["scenario"] == "3":
            add(
                f"S3 RSS per idle connection ({r['connections']} conns)",
                r.get("kb_per_connection"),
                20,
                False,
                "KB",
            )
        if r["scenario"] == "4" and r["target"] == "project":
            engine = "PostgreSQL" if str(r.get("database")).startswith("postgres") else "SQLite"
            add(f"S4 added TTFT p50 on {engine}", r.get("added_p50_ms"), 5, False, "ms")
        if r["scenario"] == "5" and r["rate"] == "fast":
            add(
                f"S5 SSE fan-out fast, {r['subscribers']} subs vs raw SSE",
                r.get("ratio"),
                0.8,
                True,
                "ratio",
            )
            add(
                f"S5 SSE fan-out fast, {r['subscribers']} subs (+non-reader), deliveries per "
                "server CPU-second vs raw SSE",
                r.get("cpu_ratio"),
                0.8,
                True,
                "ratio",
            )
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(runs: list[Row], targets: list[Row]) -> str:
    lines: list[str] = []
    if any(r["scenario"] in ("1", "5") for r in runs):
        lines += [
            "### Fan-out (scenarios 1, 5)",
            "",
            "| scen | target | transport | loop | subs | tok/s | deliveries/s "
            "| deliveries per server CPU-s | vs baseline (/s) | vs baseline (per CPU-s) "
            "| frames/s | p50 ms | p99 ms | server CPU % | client CPU % "
            "| stand-in CPU % | stand-in µs/chunk | upstream requests (avg bytes), chunks/s "
            "| tokens published/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in runs:
        if r["scenario"] not in ("1", "5"):
            continue
        name = r["target"] + (" +non-reader" if r.get("non_reader") else "")
        upstream = "-"
        if r.get("standin_chunks_per_s") is not None:
            upstream = (
                f"{r['standin_requests']} ({_f(r.get('standin_request_bytes_avg'))}), "
                f"{_f(r['standin_chunks_per_s'], 0)}"
            )
        lines.append(
            f"| {r['scenario']} | {name} | {r['transport']} | {r['loop']} "
            f"| {r['subscribers']} | {r['rate']} | {_f(r['deliveries_per_s'], 0)} "
            f"| {_f(r.get('deliveries_per_cpu_s'), 0)} | {_f(r.get('ratio'), 2)} "
            f"| {_f(r.get('cpu_ratio'), 2)} "
            f"| {_f(r['frames_per_s'], 0)} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} "
            f"| {_f(r['server_cpu_pct'])} | {_f(r['client_cpu_pct'])} "
            f"| {_f(r['standin_cpu_pct'])} | {_f(r.get('standin_us_per_chunk'))} | {upstream} "
            f"| {_f(r.get('tokens_published_per_s'), 0)} |"
        )
    many = [r for r in runs if r["scenario"] == "2"]
    if many:
        lines += [
            "",
            "### Many conversations (scenario 2)",
            "",
            "| target | database | procs | convs | subs | tok/s each | sent/s | deliveries/s "
            "| delivered/sent | p50 ms | p99 ms | max ms | server CPU % | server µs/token "
            "| client CPU % | stand-in CPU % | machine CPU % | load avg | starts s "
            "| start p50 ms | start max ms | starts queued / refused overloaded "
            "| answers complete | vs baseline | CPU/token vs 1 proc |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            "---|---|---|---|---|",
        ]
        for r in many:
            if "answers_complete" in r:
                answers = f"{r['answers_complete']}/{r['answers_started']}"
                if r.get("starts_failed"):
                    errors = ", ".join(f"{k}: {v}" for k, v in r.get("starts_errors", {}).items())
                    left = ", ".join(
                        f"{k}: {v}" for k, v in (r.get("failed_start_rooms") or {}).items()
                    )
                    answers += (
                        f" (+{r['starts_failed']} starts failed: {errors}; "
                        f"their rooms' last answer: {left})"
                    )
            else:
                answers = "-"
            lines.append(
                f"| {r['target']} | {r.get('database') or '-'} | {r.get('procs', 1)} "
                f"| {r['conversations']} "
                f"| {r['subscribers']} | {r['rate']} | {_f(r.get('sent_per_s'), 0)} "
                f"| {_f(r['deliveries_per_s'], 0)} | {_f(r.get('delivered_ratio'), 3)} "
                f"| {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['max_ms'])} "
                f"| {_f(r['server_cpu_pct'])} | {_f(r.get('server_us_per_token'))} "
                f"| {_f(r['client_cpu_pct'])} "
                f"| {_f(r['standin_cpu_pct'])} | {_f(r.get('machine_cpu_pct'))} "
                f"| {r.get('loadavg', '-')[:14]} "
                f"| {_f(r.get('starts_s'), 2)} "
                f"| {_f(r.get('starts_p50_ms'))} | {_f(r.get('starts_max_ms'))} "
                f"| {_f(r.get('starts_queued'))} / {_f(r.get('starts_overloaded'))} "
                f"| {answers} "
                f"| {_f(r.get('ratio'), 2)} | {_f(r.get('cpu_vs_one_proc'), 2)} |"
            )
    cost = [r for r in runs if r["scenario"] == "2c"]
    if cost:
        lines += [
            "",
            "### Server CPU per streamed token (scenario 2, 1 subscriber each)",
            "",
            "| who | database | streams | tok/s each | tokens/s | CPU % | CPU s "
            "| µs CPU per token (chunk) | vs SDK | vs raw aiohttp + orjson floor |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in cost:
            if r["target"] == "project":
                who, per_s = "server (project)", r["deliveries_per_s"]
                pct, sec, us = (
                    r["server_cpu_pct"],
                    r.get("server_cpu_s"),
                    r.get("server_us_per_token"),
                )
            else:
                who = "google-genai SDK alone" if r["target"] == "sdk" else "raw aiohttp + orjson"
                per_s, pct, sec, us = r["chunks_per_s"], r["cpu_pct"], r["cpu_s"], r["us_per_chunk"]
            lines.append(
                f"| {who} | {r.get('database') or '-'} | {r['conversations']} | {r['rate']} "
                f"| {_f(per_s, 0)} | {_f(pct)} | {_f(sec, 2)} | {_f(us)} "
                f"| {_f(r.get('ratio', 1.0 if r['target'] == 'sdk' else None), 2)} "
                f"| {_f(r.get('ratio_raw', 1.0 if r['target'] == 'raw' else None), 2)} |"
            )
    caps = [r for r in runs if r["scenario"] == "2cap"]
    if caps:
        lines += [
            "",
            "### Capacity (scenario 2): most conversations sustained",
            "",
            "Sustained = p99 ≤ 200 ms, delivered/sent ≥ 0.98, no start refused; "
            "probes doubling, then bisecting.",
            "",
            "| procs | database | subs each | tok/s each | capacity (convs) | first not "
            "sustained | vs 1 proc | probes (convs: p99 ms, delivered/sent, starts failed, "
            "server CPU %) | stopped by |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in caps:
            probes = "; ".join(
                f"{p['conversations']}{'✓' if p['sustained'] else '✗'}: {_f(p['p99_ms'])}, "
                f"{_f(p['delivered_ratio'], 3)}, {p['starts_failed']}, {_f(p['server_cpu_pct'])}"
                for p in r["probes"]
            )
            lines.append(
                f"| {r['procs']} | {r['database']} | {r['subscribers_each']} | {r['rate']} "
                f"| {r['capacity']} | {_f(r.get('first_failed'))} | {_f(r.get('vs_one_proc'), 2)} "
                f"| {probes} | {r['stopped']} |"
            )
    idle = [r for r in runs if r["scenario"] == "3"]
    if idle:
        lines += [
            "",
            "### Idle connections (scenario 3)",
            "",
            "| target | connections | RSS before MB | RSS after MB | KB/connection "
            "| handshakes/s | idle server CPU % | vs baseline |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in idle:
            lines.append(
                f"| {r['target']} | {r['connections']} | {r['rss_before_mb']} "
                f"| {r['rss_after_mb']} "
                f"| {_f(r['kb_per_connection'], 2)} | {_f(r['handshakes_per_s'], 0)} "
                f"| {r['idle_server_cpu_pct']} | {_f(r.get('ratio'), 2)} |"
            )
    ttft = [r for r in runs if r["scenario"] == "4"]
    if ttft:
        lines += [
            "",
            "### Time to first token added by the server (scenario 4)",
            "",
            "| target | database | turns | added p50 ms | added p99 ms | added max ms "
            "| TTFT p50 ms | vs baseline (p50) | added − baseline's, p50 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        base = next((r for r in ttft if r["target"] == "baseline"), None)
        for r in ttft:
            over = None
            if r["target"] != "baseline" and base and base["added_p50_ms"] is not None:
                over = (r["added_p50_ms"] or 0.0) - base["added_p50_ms"]
            lines.append(
                f"| {r['target']} | {r['database']} | {r['turns']} | {_f(r['added_p50_ms'], 2)} "
                f"| {_f(r['added_p99_ms'], 2)} | {_f(r['added_max_ms'], 2)} "
                f"| {_f(r['ttft_p50_ms'], 2)} | {_f(r.get('ratio'), 2)} | {_f(over, 2)} |"
            )
        lines += phase_lines([r for r in ttft if r.get("phases")])
        for r in ttft:
            floor = r.get("commit_floor")
            if floor:
                lines += [
                    "",
                    f"{r['database']}: a durable one-row commit (asyncpg, 200 sequential, "
                    f"same database, right after) took p50 {floor['p50_ms']:.2f} ms, "
                    f"p90 {floor['p90_ms']:.2f} ms in this run.",
                ]
    if targets:
        lines += [
            "",
            "### Targets (issues 6, 14 and 21)",
            "",
            "| target | value | limit | met |",
            "|---|---|---|---|",
        ]
        for t in targets:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(
                f"| {t['target']} | {_f(t['value'], 3)} {t['unit']} "
                f"| {t['limit']} {t['unit']} | {met} |"
            )
    return "\n".join(lines).strip("\n")


def plot(runs: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fan = [r for r in runs if r["scenario"] in ("1", "2", "5")]
    labels = [
        f"S{r['scenario']} {r['target'][:4]} {r['transport']}"
        f"{'/aio' if r['loop'] == 'asyncio' else ''}\n{r['subscribers']}s {r['rate']}"
        for r in fan
    ]
    fig, axes = plt.subplots(2, 2, figsize=(18, 11))
    ax = axes[0][0]
    x = range(len(fan))
    for key, marker in (("p50_ms", "o"), ("p99_ms", "s"), ("max_ms", "^")):
        ax.scatter(
            list(x),
            [r.get(key) or float("nan") for r in fan],
            marker=marker,
            label=key.replace("_ms", ""),
        )
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (stand-in send → client receipt)")
    ax.set_title("Delivery latency per run")
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
    ax.legend()
    ax = axes[0][1]
    colors = ["tab:blue" if r["target"] == "project" else "tab:grey" for r in fan]
    ax.bar(list(x), [r["deliveries_per_s"] for r in fan], color=colors)
    ax.set_ylabel("token deliveries / s")
    ax.set_title("Throughput per run (blue: project, grey: bare baseline)")
    ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
    ax = axes[1][0]
    idle = [r for r in runs if r["scenario"] == "3"]
    ax.bar(
        [r["target"] for r in idle],
        [r["kb_per_connection"] for r in idle],
        color=["tab:blue" if r["target"] == "project" else "tab:grey" for r in idle],
    )
    ax.axhline(20, color="red", linestyle=":", linewidth=1)
    ax.set_ylabel("KB RSS per idle WebSocket")
    ax.set_title("Scenario 3: memory per connection (target ≤ 20 KB)")
    ax = axes[1][1]
    ttft = [r for r in runs if r["scenario"] == "4"]
    names = [f"{r['target']} {r['database']}" for r in ttft]
    pos = range(len(ttft))
    ax.bar([p - 0.2 for p in pos], [r["added_p50_ms"] or 0 for r in ttft], width=0.4, label="p50")
    ax.bar([p + 0.2 for p in pos], [r["added_p99_ms"] or 0 for r in ttft], width=0.4, label="p99")
    ax.axhline(5, color="red", linestyle=":", linewidth=1)
    ax.set_xticks(list(pos), names)
    ax.set_ylabel("ms added to time to first token")
    ax.set_title("Scenario 4: TTFT added by the server (target p50 ≤ 5 ms on PostgreSQL)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


_LINE = re.compile(r"\s*\((.*?):\d+\)$")


def _frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` → ``func (file.py)``."""
    match = _LINE.search(frame)
    if not match:
        return frame.strip()
    func = frame[: match.start()].strip()
    return f"{func} ({Path(match.group(1)).name})"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's collapsed (raw) stacks."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        self_time[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return {}

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in c.most_common(top)]

    # Drop the start-up chain (runpy, cli, the loop's run) that every sample shares.
    for name in [n for n, c in inclusive.items() if c >= 0.95 * total]:
        del inclusive[name]
    return {"samples": total, "self_pct": pct(self_time), "inclusive_pct": pct(inclusive)}
