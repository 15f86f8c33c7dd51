"""Dollars per million jobs at Google Cloud's list prices, from what bench.end_to_end measured per
job: the function servers' CPU, PostgreSQL's CPU, and the requests and messages a job takes.

The prices (`PRICES`) are list prices for us-central1 (tier 1), in USD, without free tiers or
committed-use discounts, as read on `READ_ON`; each names where it was read and whether Google's
own page confirmed it (`confirmed=False`: only a third party's copy was found).

How each line is counted, per job:
- **Cloud Run CPU** (request-based billing, the default for functions; 1 vCPU per instance, as
  infra/functions.tf): an instance is billed while it serves at least one request. Kept busy at
  concurrency 8 and CPU-bound, its billed time per job is its CPU time per job, so vCPU-seconds
  per job = the servers' measured CPU seconds per job. A lower bound: an instance that waits
  on the database with nothing else to do is billed for the wait too.
- **Cloud Run memory**: Cloud Run bills the configured memory, not the resident set, for the
  same billed time: `MEMORY_GIB` per role (infra/functions.tf: submit 512 MiB, process 1 GiB),
  the same for every pipeline (the measured peak RSS, about 100 MiB, fits either).
- **Cloud Run requests**: one per HTTP request (the submit, and each push into `process`).
- **Cloud SQL**: PostgreSQL's measured CPU seconds per job, priced as a share of an Enterprise
  edition instance's vCPU-hours: the cost if the instance's vCPUs were kept busy (at 50%
  utilisation it doubles). Memory and storage are sized by data and connections, not by jobs,
  and are left out.
- **Pub/Sub**: throughput, with Pub/Sub's minimum of 1,000 bytes per publish, push or pull
  request: a job's publish and its push are 1,000 B each (the messages are ~200 B). Ours also
  publishes a result notification per job, batched by the notifier (common/messaging/notify.py)
  into shared Publish calls under load: counted at its own size, `RESULT_NOTIFICATION_BYTES`
  (a Publish of its own would be 1,000 B). Deliveries of notifications depend on subscribers
  and are left out.
- **Cloud Tasks + a hand-written handler**: the floor pair with its Pub/Sub replaced by a queue:
  `submit_floor` creates a task (one billable operation) where it published, and the queue's
  push into `process_floor` is another; the floor pair's Cloud Run and Cloud SQL costs as
  measured (creating a task is taken to cost the server what a publish does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READ_ON = "2026-12-07"
REGION = "us-central1 (tier 1)"


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    confirmed: bool  # read on Google's own page (else only a third party's copy was found)


PRICES = {
    "run_vcpu_s": Price(0.000024, "per vCPU-second, request-based billing",
                        "cloud.google.com/run/pricing", True),
    "run_gib_s": Price(0.0000025, "per GiB-second, request-based billing",
                       "cloud.google.com/run/pricing (the stored copy ends before this cell); "
                       "cloudwebschool.com's Cloud Run calculator", False),
    "run_request": Price(0.40 / 1e6, "per request ($0.40 per million)",
                         "cloud.google.com/run/pricing (as above); cloudwebschool.com", False),
    "sql_vcpu_hour": Price(0.0413, "per vCPU-hour, Cloud SQL Enterprise edition, dedicated core",
                           "usage.ai's Cloud SQL pricing guide (May 2026, citing "
                           "cloud.google.com/sql/pricing)", False),
    "pubsub_tib": Price(40.0, "per TiB of publish and delivery throughput (1,000 B minimum "
                        "per request)", "cloud.google.com/pubsub/pricing", True),
    "tasks_operation": Price(0.40 / 1e6, "per billable operation ($0.40 per million; an API "
                             "call or a push attempt, per 32 KB)",
                             "cloud.google.com/tasks/docs/pricing", True),
}
MEMORY_GIB = {"submit": 0.5, "process": 1.0}  # infra/functions.tf
PUBSUB_MIN_BYTES = 1000
RESULT_NOTIFICATION_BYTES = 170  # body ~75 B, attributes ~55 B, timestamp 20 B, message id
TIB = 2 ** 40


@dataclass(frozen=True)
class Usage:
    """What one job takes."""

    cpu_ms: dict[str, float]  # Cloud Run CPU per role ("submit", "process")
    db_cpu_ms: float
    run_requests: int
    pubsub_bytes: float = 0.0
    tasks_operations: int = 0


def per_million(usage: Usage) -> dict[str, float]:
    """Dollars per million jobs, by line, and their total."""
    p = {k: v.usd for k, v in PRICES.items()}
    cpu_s = {role: ms / 1000 for role, ms in usage.cpu_ms.items()}
    lines = {
        "run_cpu": sum(cpu_s.values()) * p["run_vcpu_s"],
        "run_memory": sum(s * MEMORY_GIB[role] for role, s in cpu_s.items()) * p["run_gib_s"],
        "run_requests": usage.run_requests * p["run_request"],
        "sql_cpu": usage.db_cpu_ms / 1000 / 3600 * p["sql_vcpu_hour"],
        "pubsub": usage.pubsub_bytes / TIB * p["pubsub_tib"],
        "tasks": usage.tasks_operations * p["tasks_operation"],
    }
    out = {k: v * 1e6 for k, v in lines.items()}
    out["total"] = sum(out.values())
    return out


def _usage(fig: dict[str, Any], pubsub_bytes: float) -> Usage:
    return Usage({"submit": fig["submit_cpu_ms_per_job"],
                  "process": fig["process_cpu_ms_per_job"]},
                 fig.get("db_cpu_ms_per_job", 0.0), run_requests=2, pubsub_bytes=pubsub_bytes)


def pipeline_costs(e2e: dict[str, Any]) -> dict[str, dict[str, float]]:
    """$ per million jobs for each pipeline bench.end_to_end measured (its recorded means), and
    for Cloud Tasks with the floor pair's handlers."""
    plain = 2 * PUBSUB_MIN_BYTES  # the job's publish and its push
    floor = _usage(e2e["floor"], plain)
    costs = {
        "ours": per_million(_usage(e2e["ours"], plain + RESULT_NOTIFICATION_BYTES)),
        "floor pair": per_million(floor),
    }
    if e2e.get("claiming"):
        costs["claiming pair"] = per_million(_usage(e2e["claiming"], plain))
    costs["Cloud Tasks + floor handlers"] = per_million(Usage(
        floor.cpu_ms, floor.db_cpu_ms, run_requests=2, tasks_operations=2))
    return costs


def price_lines() -> list[str]:
    """The table of prices, for a report."""
    return [f"- {name}: ${f'{price.usd:.10f}'.rstrip('0').rstrip('.')} {price.unit}; "
            f"{price.source}"
            + ("" if price.confirmed else " (**not confirmed on Google's page**)")
            for name, price in PRICES.items()]
