"""bench.report's rows for issue 30's figures: the pinned lifecycle, what the database spends per
job (CPU, statements, WAL) in process_alone and end_to_end, and dollars per million jobs
(bench/prices.py), with the prices and their date under the table."""

from __future__ import annotations

from typing import Any

from bench.prices import READ_ON, REGION, pipeline_costs, price_lines

Row = tuple[str, str, str, str, str]


def _verdict(ok: bool) -> str:
    return "OK" if ok else "**not met**"


def lifecycle_pinned_rows(life: dict[str, Any]) -> list[Row]:
    rows = life.get("pinned_rows") or []
    cpus = f"PostgreSQL on CPU {life.get('server_cpu', 0)}, clients on {life.get('client_cpu', 1)}"
    return [(f"lifecycle, {r['clients']} worker(s), pinned ({cpus})", f"{r['ours']:.0f}/s",
             f"pgbench {r['floor']:.0f}/s", f"{r['ratio']:.2f}",
             f"≥ {life['target']} {_verdict(r['ratio'] >= life['target'])}") for r in rows]


def _db_rows(where: str, ours: dict[str, Any], floor: dict[str, Any],
             claiming: dict[str, Any] | None, floor_name: str, wal: bool = True) -> list[Row]:
    """Database CPU, statements and WAL per job, ours against the floor (ours / floor: below
    1.0, ours costs the database less), and the claiming floor beside, as information."""
    out: list[Row] = []
    for key, label, fmt, target in (
            ("db_cpu_ms_per_job", "PostgreSQL CPU per job", "{:.2f} ms", "≤ 1.0"),
            ("statements_per_job", "statements per job (pg_stat_statements)", "{:.2f}", ""),
            ("wal_bytes_per_job", "WAL per job", "{:,.0f} B", "")):
        if key not in ours or key not in floor or (key == "wal_bytes_per_job" and not wal):
            continue
        ratio = ours[key] / floor[key] if floor[key] else float("nan")
        beside = f"; claiming {fmt.format(claiming[key])}" if claiming and key in claiming else ""
        verdict = (f"{target} {_verdict(ratio <= 1.0)}" if target else "information")
        out.append((f"{where}, {label} (ours / floor)", fmt.format(ours[key]),
                    f"{floor_name} {fmt.format(floor[key])}{beside}", f"{ratio:.2f}", verdict))
    return out


def end_to_end_db_rows(e2e: dict[str, Any]) -> list[Row]:
    delivery = e2e.get("delivery", "push")
    where = "end to end" + (f" ({delivery}, {e2e['relay_concurrency']} at a time)"
                            if delivery == "relay" else " (emulator push)")
    # WAL per job has its own row there already (with its target).
    return _db_rows(where, e2e["ours"], e2e["floor"], e2e.get("claiming"), "pair", wal=False)


def process_alone_db_rows(alone: dict[str, Any]) -> list[Row]:
    m = alone["mean"]
    rows = _db_rows("process alone", m["ours"], m["floor"], m.get("claiming"), "process_floor")
    if off := m.get("unbatched"):  # issue 30: ours with WORKER_BATCHING=false, same rounds
        rows.append(("process alone, batching on vs off: jobs/s (on / off)",
                     f"{m['ours']['jobs_per_s']:.0f}/s", f"off {off['jobs_per_s']:.0f}/s",
                     f"{m['ours']['jobs_per_s'] / off['jobs_per_s']:.2f}", "information"))
        for key, label, fmt in (("cpu_ms_per_job", "CPU per job", "{:.2f} ms"),
                                ("db_cpu_ms_per_job", "PostgreSQL CPU per job", "{:.2f} ms"),
                                ("statements_per_job", "statements per job", "{:.2f}"),
                                ("wal_bytes_per_job", "WAL per job", "{:,.0f} B")):
            if key in m["ours"] and off.get(key):
                rows.append((f"process alone, batching on vs off: {label} (on / off)",
                             fmt.format(m["ours"][key]), "off " + fmt.format(off[key]),
                             f"{m['ours'][key] / off[key]:.2f}", "information"))
    return rows


def dollar_rows(e2e: dict[str, Any]) -> list[Row]:
    """$ per million jobs: ours against the floor pair, with the claiming pair and Cloud Tasks
    plus the floor's handlers beside it."""
    if "db_cpu_ms_per_job" not in e2e["ours"]:
        return []
    costs = pipeline_costs(e2e)
    ours, floor = costs["ours"], costs["floor pair"]

    def split(c: dict[str, float]) -> str:
        return (f"${c['total']:.3f} (Run CPU+mem {c['run_cpu'] + c['run_memory']:.3f}, "
                f"requests {c['run_requests']:.3f}, SQL {c['sql_cpu']:.3f}, "
                f"Pub/Sub {c['pubsub']:.3f}" + (f", Tasks {c['tasks']:.3f}" if c["tasks"] else "")
                + ")")

    rows: list[Row] = [("end to end, $ per million jobs at list prices (below), ours vs floor pair",
                        split(ours), split(floor), f"{ours['total'] / floor['total']:.2f}",
                        "information")]
    for name in ("claiming pair", "Cloud Tasks + floor handlers"):
        if name in costs:
            rows.append((f"end to end, $ per million jobs, ours vs {name}", split(ours),
                         split(costs[name]), f"{ours['total'] / costs[name]['total']:.2f}",
                         "information"))
    return rows


def price_notes() -> list[str]:
    return [f"Prices for $ per million jobs ({REGION}, USD list prices without free tiers, "
            f"read {READ_ON}; how each line is counted: bench/prices.py):", "",
            *price_lines(), ""]
