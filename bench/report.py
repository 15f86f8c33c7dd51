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

from bench.results import load

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CHART = HERE / "results.png"


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
        out.append((f"end to end, {e2e['jobs']} jobs", f"{e2e['ours']:.0f} jobs/s",
                     f"raw push {e2e['floor']:.0f} msg/s", f"{e2e['ratio']:.2f}",
                     f"≥ {e2e['target']} {_verdict(e2e['ratio'] >= e2e['target'])}"))
        out.append(("submit → COMPLETED latency", f"p50 {e2e['latency_ms']['p50']:.0f} ms, "
                     f"p99 {e2e['latency_ms']['p99']:.0f} ms", "", "", ""))
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
    if chaos := load("chaos"):
        missed = chaos.get("missed", [])
        out.append((f"chaos run, {chaos['jobs']} jobs", f"{chaos['problems']} problems"
                     + (f", missed: {', '.join(missed)}" if missed else ""),
                     "", "", _verdict(chaos["problems"] == 0 and not missed)))
    if props := load("state_properties"):
        out.append((f"state-machine properties, {props['examples']:,} examples",
                     f"{props['checked_states']:,} states checked in {props['seconds']:.0f} s",
                     "", "", _verdict(props["passed"])))
    return out


def chart() -> bool:
    life, e2e, sub = load("lifecycle"), load("end_to_end"), load("submit_latency")
    if not life:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    clients = [r["clients"] for r in life["rows"]]
    left.plot(clients, [r["ours"] for r in life["rows"]], "o-", label="job store lifecycle")
    left.plot(clients, [r["floor"] for r in life["rows"]], "s--", label="pgbench, same steps")
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
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {_machine()}.",
        "The machine is shared and noisy; figures move by ±20% between runs. Every ratio is",
        "against a floor measured in the same run (see README.md, Benchmarks, for what each",
        "benchmark does and why the end-to-end target is not met on the emulator).",
        "",
        "| benchmark | ours | floor | ratio | target |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in table],
        "",
    ]
    if chaos := load("chaos"):
        lines += ["Chaos run counts: `" + str(chaos["counts"]) + "`", ""]
    if chart():
        lines += ["![throughput and latency](results.png)", ""]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}" + (f" and {CHART}" if CHART.exists() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
