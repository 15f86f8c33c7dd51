"""bench/RESULTS.md and bench/results.png from the figures the benchmarks recorded in bench/out/
(`make bench` runs them all, then this). Every ratio is against a floor measured in the same run.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.report_cost import (
    dollar_rows,
    end_to_end_db_rows,
    lifecycle_pinned_rows,
    price_notes,
    process_alone_db_rows,
)
from bench.results import load

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CHART = HERE / "results.png"
BENCHMARKS = ("lifecycle", "submit_latency", "cold_start", "end_to_end", "process_alone",
              "sweep_scale", "flow_control", "noisy_neighbour", "chaos", "state_properties")


def _machine() -> str:
    mem = ""
    with contextlib.suppress(OSError, StopIteration):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    pg = ""
    with contextlib.suppress(OSError):
        pg = subprocess.run(["pg_ctl", "--version"], capture_output=True, text=True,
                            timeout=10, check=False).stdout.strip()
    return (f"{platform.node()}: {os.cpu_count()} cores{mem}, {platform.platform()}, "
            f"Python {platform.python_version()}" + (f", {pg}" if pg else ""))


def _verdict(ok: bool) -> str:
    return "OK" if ok else "**not met**"


def rows() -> list[tuple[str, str, str, str, str]]:
    """(benchmark, ours, floor, ratio, target and verdict)."""
    out: list[tuple[str, str, str, str, str]] = []
    if life := load("lifecycle"):
        for r in life["rows"]:
            out.append((f"lifecycle, {r['clients']} worker(s)", f"{r['ours']:.0f}/s",
                        f"pgbench {r['floor']:.0f}/s", f"{r['ratio']:.2f}",
                        f"≥ {life['target']} {_verdict(r['ratio'] >= life['target'])}"))
        out.extend(lifecycle_pinned_rows(life))
    if sub := load("submit_latency"):
        for q, target in sub["targets"].items():
            ratio = sub["ours_ms"][q] / sub["floor_ms"][q]
            out.append((f"submit latency {q}", f"{sub['ours_ms'][q]:.2f} ms",
                        f"{sub['floor_ms'][q]:.2f} ms", f"{ratio:.2f}",
                        f"≤ {target} {_verdict(ratio <= target)}"))
    if cold := load("cold_start"):
        for name, fig in cold["targets"].items():
            out.append((f"cold import, {name}", f"{fig['ours_ms']:.0f} ms",
                        f"{cold['bare_ms']:.0f} ms", f"{fig['ratio']:.2f}",
                        f"≤ {cold['target']} {_verdict(fig['ratio'] <= cold['target'])}"))
    if e2e := load("end_to_end"):
        out.extend(_end_to_end_rows(e2e))
        out.extend(end_to_end_db_rows(e2e))
        out.extend(dollar_rows(e2e))
    if alone := load("process_alone"):
        out.extend(_process_alone_rows(alone))
        out.extend(process_alone_db_rows(alone))
    if sw := load("sweep_scale"):
        out.append((f"sweep pass, {sw['big']:,} vs 10,000 terminal jobs",
                     f"{sw['large_ms']:.0f} ms", f"{sw['small_ms']:.0f} ms", f"{sw['ratio']:.2f}",
                     f"≤ {sw['target']} {_verdict(sw['ratio'] <= sw['target'])}"))
        ret = sw["retention"]
        out.append((f"retention of {ret['deleted']:,} jobs, longest transaction",
                     f"{ret['longest_transaction_ms']:.0f} ms", "", "",
                     f"< 1000 ms {_verdict(ret['longest_transaction_ms'] < 1000)}"))
    if sch := load("schedules"):
        out.append(("sweep pass per due schedule, 10,000 (1,000 due) vs 100 (10 due)",
                    f"{sch['large_ms']:.2f} ms", f"{sch['small_ms']:.2f} ms",
                    f"{sch['ratio']:.2f}",
                    f"≤ {sch['target']} {_verdict(sch['ratio'] <= sch['target'])}"))
        ms = sch["claim_ms"]
        out.append(("claim with owner limits on vs off", f"{ms['on']:.3f} ms",
                    f"{ms['off']:.3f} ms", f"{sch['claim_ratio']:.2f}",
                    f"≤ {sch['claim_target']} "
                    f"{_verdict(sch['claim_ratio'] <= sch['claim_target'])}"))
    if flow := load("flow_control"):
        out.extend(_flow_rows(flow))
    if noisy := load("noisy_neighbour"):
        out.extend(_noisy_rows(noisy))
    if chaos := load("chaos"):
        missed = chaos.get("missed", [])
        out.append((f"chaos run, {chaos['jobs']} jobs", f"{chaos['problems']} problems"
                     + (f", missed: {', '.join(missed)}" if missed else ""),
                     "", "", _verdict(chaos["problems"] == 0 and not missed)))
    if props := load("state_properties"):
        out.append((f"state-machine properties, {props['examples']:,} examples",
                     f"{props['checked_states']:,} states checked in {props['seconds']:.0f} s",
                     "", "", _verdict(props["passed"])))
    if flows := load("workflows"):
        out.extend(workflow_rows(flows))
    return out


def _flow_rows(flow: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rate limit accuracy, priority, and a claim's cost with limits on (bench.flow_control)."""
    rate, prio, cost, t = flow["rate"], flow["priority"], flow["claim_cost"], flow["targets"]
    lim = rate["limit"]
    on, off = cost["claim"]["on"], cost["claim"]["off"]
    path_on, path_off = cost["worker_path"]["on"], cost["worker_path"]["off"]
    return [
        (f"rate limit {lim['max_starts']} starts per {lim['interval_s']:g} s, {rate['jobs']} jobs, 2 "
         "`process` servers: most starts in any 1 s window",
         f"{rate['max_starts_in_1s']} (min gap {rate['min_gap_s'] * 1000:.0f} ms)", "", "",
         f"≤ {t['rate_window']} {_verdict(rate['max_starts_in_1s'] <= t['rate_window'])}"),
        ("rate limit: the run's duration (created → last finished)",
         f"{rate['duration_s']:.1f} s", f"{rate['ideal_s']:.0f} s", f"{rate['duration_ratio']:.3f}",
         f"≤ {t['rate_duration']} {_verdict(rate['duration_ratio'] <= t['rate_duration'])}"),
        (f"priority 9 behind {prio['jobs']} jobs at a key limit of {prio['limit']}: other "
         f"starts before it, worst of {len(prio['trials'])}",
         ", ".join(str(x["starts_before"]) for x in prio["trials"]), "", "",
         f"≤ {t['priority']} {_verdict(prio['worst'] <= t['priority'])}"),
        ("claim CPU (client + PostgreSQL), owner + preset + key limits on vs none",
         f"{on['cpu_us']:.0f} µs, {on['wal_bytes']:,.0f} B WAL",
         f"{off['cpu_us']:.0f} µs, {off['wal_bytes']:,.0f} B WAL", f"{cost['ratio']:.2f}",
         f"≤ {t['claim_cost']} {_verdict(cost['ratio'] <= t['claim_cost'])}"),
        ("the worker's database path per job (claim, releases, completion), limits on vs none",
         f"{path_on['cpu_us']:,.0f} µs, {path_on['statements']:.0f} statements",
         f"{path_off['cpu_us']:,.0f} µs, {path_off['statements']:.0f} statements",
         f"{cost['path_ratio']:.2f}", "information only"),
    ]


def _noisy_rows(noisy: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Owner B's p99 while owner A floods, against B alone, in the same run."""
    quiet, flood = noisy["phases"]["quiet"]["b"], noisy["phases"]["flood"]["b"]
    target = noisy["target"]
    out = []
    for key, label in (("submit_ms", "submit"), ("completion_ms", "time to completion")):
        ratio = flood[key]["p99"] / quiet[key]["p99"]
        out.append((f"noisy neighbour: B's {label} p99 under A's flood vs alone",
                    f"{flood[key]['p99']:.1f} ms", f"{quiet[key]['p99']:.1f} ms",
                    f"{ratio:.2f}", f"≤ {target} {_verdict(ratio <= target)}"))
    return out


def _end_to_end_rows(e2e: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    o, f, t = e2e["ours"], e2e["floor"], e2e["targets"]
    size = f"{e2e['jobs']} jobs x {e2e['rounds']} rounds"
    r = e2e["ratios"]
    return [
        (f"end to end, throughput ({size})", f"{o['jobs_per_s']:.0f} jobs/s",
         f"pair {f['jobs_per_s']:.0f} jobs/s", f"{r['throughput']:.2f}",
         f"≥ {t['throughput']} {_verdict(r['throughput'] >= t['throughput'])}"),
        ("end to end, CPU per job", f"{o['cpu_ms_per_job']:.2f} ms",
         f"pair {f['cpu_ms_per_job']:.2f} ms", f"{r['cpu_per_job']:.2f}",
         f"≤ {t['cpu_per_job']} {_verdict(r['cpu_per_job'] <= t['cpu_per_job'])}"),
        ("end to end, WAL per job", f"{o['wal_bytes_per_job']:,.0f} B",
         f"pair {f['wal_bytes_per_job']:,.0f} B", f"{r['wal_per_job']:.1f}",
         f"≤ {t['wal_per_job_bytes']:,} B "
         f"{_verdict(o['wal_bytes_per_job'] <= t['wal_per_job_bytes'])}"),
        *_claiming_rows("end to end", o, e2e.get("claiming"), e2e.get("vs_claiming"),
                        "throughput", "cpu_per_job", "ours / it"),
        ("submit → COMPLETED latency, ours", f"p50 {e2e['latency_ms']['p50']:.0f} ms, "
         f"p99 {e2e['latency_ms']['p99']:.0f} ms", "", "", ""),
        ("raw emulator push into a no-op function", "",
         f"{e2e['raw_push_msg_per_s']:.0f} msg/s", "", "information only"),
    ]


def _process_alone_rows(alone: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    o, f, target = alone["mean"]["ours"], alone["mean"]["floor"], alone["target"]
    rss = alone["peak_rss_mib"]
    return [
        (f"process alone, concurrency 8, jobs/s per instance ({alone['jobs']} jobs x "
         f"{alone['rounds']} rounds)", f"{o['jobs_per_s']:.0f} jobs/s",
         f"process_floor {f['jobs_per_s']:.0f} jobs/s", f"{alone['throughput_ratio']:.2f}",
         f"≥ {target} {_verdict(alone['throughput_ratio'] >= target)}"),
        ("process alone, CPU per job (floor / ours)", f"{o['cpu_ms_per_job']:.2f} ms",
         f"{f['cpu_ms_per_job']:.2f} ms", f"{alone['cpu_ratio']:.2f}",
         f"≥ {target} {_verdict(alone['cpu_ratio'] >= target)}"),
        ("process alone, peak RSS", f"{rss['process']:.0f} MiB",
         f"{rss['process_floor']:.0f} MiB", "", ""),
        *_claiming_rows("process alone", o, alone["mean"].get("claiming"),
                        alone.get("vs_claiming"), "throughput_ratio", "cpu_ratio", "it / ours"),
    ]


def _claiming_rows(
    where: str, ours: dict[str, Any], claiming: dict[str, Any] | None,
    vs: dict[str, Any] | None, throughput_key: str, cpu_key: str, cpu_direction: str,
) -> list[tuple[str, str, str, str, str]]:
    """The claiming pair (the floor plus a claim before running), as information: ours
    against it prices our guarantees beyond the claim. `cpu_direction` names which way the
    CPU ratio was taken, as the benchmark took it."""
    if not claiming or not vs:
        return []
    return [
        (f"{where}, against the claiming pair: throughput (ours / it)",
         f"{ours['jobs_per_s']:.0f} jobs/s", f"{claiming['jobs_per_s']:.0f} jobs/s",
         f"{vs[throughput_key]:.2f}", "information only"),
        (f"{where}, against the claiming pair: CPU per job ({cpu_direction})",
         f"{ours['cpu_ms_per_job']:.2f} ms", f"{claiming['cpu_ms_per_job']:.2f} ms",
         f"{vs[cpu_key]:.2f}", "information only"),
    ]


def workflow_rows(flows: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """A chain against single jobs one after another, and a fan-out's fan-in (bench.workflows),
    for each way messages reached `process` (the emulator's push, make dev's relay)."""
    t, rows = flows["targets"], []
    for delivery, res in flows["deliveries"].items():
        chain, fan = res["chain"], res["fan_out"]
        m, n, gap = chain["median"], fan["children"], fan["gap_from_last_child_s"]
        rows += [
            (f"workflow chain of {chain['steps']} echo steps vs {chain['steps']} singles each "
             f"submitted after the last ended ({delivery}, median of {chain['reps']})",
             f"{m['chain']['wall_s'] * 1000:.0f} ms (hop {m['chain']['hop_ms']:.0f} ms)",
             f"{m['singles']['wall_s'] * 1000:.0f} ms (hop {m['singles']['hop_ms']:.0f} ms)",
             f"{chain['ratio']:.2f}",
             f"≤ {t['chain_vs_singles']} {_verdict(chain['ratio'] <= t['chain_vs_singles'])}"),
            (f"fan-out of {n:,} children: the fan-in's start after the last child's end "
             f"({delivery}, database clocks, {len(fan['runs'])} runs)",
             f"median {gap['median'] * 1000:.0f} ms, worst {gap['max'] * 1000:.0f} ms", "", "",
             f"≤ {t['fan_in_gap_s'] * 1000:.0f} ms {_verdict(gap['max'] <= t['fan_in_gap_s'])}"),
        ]
        if fan["statements_per_child"] is not None:
            rows.append((f"fan-out of {n:,} ({delivery}): statements per child "
                         "(pg_stat_statements: all the servers sent / children)",
                         f"{fan['statements_per_child']:.2f}, and "
                         f"{fan['nested_statements_per_child']:.2f} in the trigger; "
                         f"{fan['wal_bytes_per_child']:,.0f} B WAL", "", "", "information only"))
    return rows


def _cost_panel(ax: Any, e2e: dict[str, Any] | None, alone: dict[str, Any] | None) -> None:
    """Ours against the floor pair (and the claiming pair, where measured): jobs/s end to end
    and per `process` instance, and CPU ms per job (end to end, both servers; process alone)."""
    labels: list[str] = []
    bars: dict[str, list[float]] = {"ours": [], "ours, batching off": [], "floor pair": [],
                                    "claiming pair": []}

    def add(label: str, key: str, scale: float, ours: Any, floor: Any, claiming: Any,
            unbatched: Any = None) -> None:
        labels.append(label)
        bars["ours"].append(ours[key] * scale)
        bars["ours, batching off"].append(unbatched[key] * scale if unbatched else 0.0)
        bars["floor pair"].append(floor[key] * scale)
        bars["claiming pair"].append(claiming[key] * scale if claiming else 0.0)

    if e2e:
        for label, key, scale in (("end to end\njobs/s", "jobs_per_s", 1),
                                  ("end to end\nCPU µs/job ÷ 10", "cpu_ms_per_job", 100)):
            add(label, key, scale, e2e["ours"], e2e["floor"], e2e.get("claiming"))
    if alone:
        m = alone["mean"]
        for label, key, scale in (("process alone\njobs/s", "jobs_per_s", 1),
                                  ("process alone\nCPU µs/job ÷ 10", "cpu_ms_per_job", 100),
                                  ("process alone\nDB µs/job ÷ 10",
                                   "db_cpu_ms_per_job", 100)):
            if key in m["ours"]:
                add(label, key, scale, m["ours"], m["floor"], m.get("claiming"),
                    m.get("unbatched"))
    x = range(len(labels))
    for offset, (name, values) in zip((-0.3, -0.1, 0.1, 0.3), bars.items(), strict=True):
        ax.bar([i + offset for i in x], values, width=0.2, label=name)
    ax.set(title="Cost per job against the floors")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()


def chart() -> bool:
    life, e2e, sub = load("lifecycle"), load("end_to_end"), load("submit_latency")
    if not life:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.2))
    clients = [r["clients"] for r in life["rows"]]
    left.plot(clients, [r["ours"] for r in life["rows"]], "o-", label="job store lifecycle")
    left.plot(clients, [r["floor"] for r in life["rows"]], "s--", label="pgbench, same steps")
    if pinned := life.get("pinned_rows"):
        at = [r["clients"] for r in pinned]
        left.plot(at, [r["ours"] for r in pinned], "o:", label="job store, pinned")
        left.plot(at, [r["floor"] for r in pinned], "s:", label="pgbench, pinned")
    left.set(title="Throughput by concurrency", xlabel="concurrent workers",
             ylabel="lifecycles per second", xticks=clients)
    left.grid(alpha=0.3)
    left.legend()
    labels, ours, floors = [], [], []
    if sub:
        for q in ("p50", "p99"):
            labels.append(f"submit {q}\n(1 client)")
            ours.append(sub["ours_ms"][q])
            floors.append(sub["floor_ms"][q])
    if e2e:
        for q in ("p50", "p99"):
            labels.append(f"submit→done {q}\n({e2e['clients']} clients)")
            ours.append(e2e["latency_ms"][q])
            floors.append(0.0)
    x = range(len(labels))
    right.bar([i - 0.2 for i in x], ours, width=0.4, label="ours")
    right.bar([i + 0.2 for i in x], floors, width=0.4, label="floor (where there is one)")
    right.set(title="Latency", ylabel="milliseconds (log scale)", yscale="log")
    right.set_xticks(list(x), labels, fontsize=8)
    right.grid(alpha=0.3, axis="y")
    right.legend()
    _cost_panel(third, e2e, load("process_alone"))
    fig.suptitle(f"jobs-pipeline benchmarks, {time.strftime('%Y-%m-%d')}")
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    table = rows()
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench.report` (`make bench` runs every benchmark, then it) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {_machine()}.",
        "The machine is shared and noisy; figures move by ±20% between runs. Every ratio is",
        "against a floor measured in the same run (see docs/benchmarks.md for what each",
        "benchmark does; the end-to-end floor is the hand-written pair in bench/floor/main.py).",
        "",
        "| benchmark | ours | floor | ratio | target |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in table],
        "",
    ]
    missing = [name for name in (*BENCHMARKS, "workflows") if load(name) is None]
    if missing:
        lines += ["Not run (no figures recorded in bench/out/): "
                  + ", ".join(f"`bench.{name}`" for name in missing) + ".", ""]
    if (e2e := load("end_to_end")) and "db_cpu_ms_per_job" in e2e["ours"]:
        lines += price_notes()
    if chaos := load("chaos"):
        lines += ["Chaos run counts: `" + str(chaos["counts"]) + "`", ""]
    if chart():
        lines += ["![throughput and latency](results.png)", ""]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}" + (f" and {CHART}" if CHART.exists() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
