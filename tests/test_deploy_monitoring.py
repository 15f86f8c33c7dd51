"""Monitoring as code (issue 13): the log-based metrics read log lines and report fields that the
code really writes, every metric is on the dashboard, every alert notifies the channels and says
what it means, and the Cloud SQL, Artifact Registry and budget settings hold."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest

from common.store.job_store import JobStore
from localstack.paths import ROOT
from tests.support.terraform import Infra, one_block

CODE = "\n".join(p.read_text() for p in sorted((ROOT / "common").rglob("*.py")))


@pytest.fixture(scope="module")
def infra() -> Infra:
    return Infra()



def test_log_filters_name_log_lines_the_code_writes(infra: Infra) -> None:
    messages = re.findall(r'jsonPayload\.message=\\?"([^"\\]+)\\?"', infra.text())
    assert {"sweep pass", "job attempt finished", "poison message acknowledged"} <= set(messages)
    for message in set(messages):
        assert f'"{message}"' in CODE, f"no log line {message!r} in common/"
    # The label the finishes are split by is a field of that line, and its values are the
    # worker's actions.
    assert "outcome=outcome.action" in CODE
    for action in ("completed", "failed", "cancelled"):
        assert f'"{action}"' in CODE


def _returned_keys(path: str, function: str) -> set[str]:
    """The keys of the dict literal that `function` in `path` returns: a step's report."""
    tree = ast.parse((ROOT / path).read_text())
    func = next(n for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef) and n.name == function)
    keys: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return keys


def test_sweep_figures_read_keys_the_report_has(infra: Infra, store: JobStore) -> None:
    """Each figure's field is a key path of the sweep's report: the queue part from a real
    queue report on PostgreSQL, a step's part from the dict its function returns. (The chart
    "Dead letters settled" read `steps.dead_letters.settled`, a key the sweep never reported;
    the old test only looked for the last word anywhere in common/.)"""
    queue = store.queue_report()
    steps = {"dead_letters": _returned_keys("common/maintenance/dead_letters.py", "settle")}
    figures = infra.locals["sweep_figures"]
    assert {"queue_pending", "queue_processing", "queue_due", "queue_parked",
            "oldest_pending_age", "delivery_failed", "undeliverable"} <= set(figures)
    for name, figure in figures.items():
        path = figure["field"].removeprefix("jsonPayload.summary.").split(".")
        if path[0] == "queue":
            node: Any = queue
            for key in path[1:]:
                assert isinstance(node, dict) and key in node, f"{name}: no {figure['field']}"
                node = node[key]
        else:
            assert path[0] == "steps" and len(path) == 3, f"{name}: {figure['field']}"
            assert path[2] in steps[path[1]], f"{name}: the report has no {figure['field']}"
    metric = infra.resource("google_logging_metric", "sweep_figure")
    assert metric["value_extractor"] == "EXTRACT(${each.value.field})"
    assert metric["filter"] == "${local.sweep_report}"
    assert one_block(metric["metric_descriptor"])["value_type"] == "DISTRIBUTION"
    counts = infra.locals["log_counts"]
    assert {"sweep_passes", "sweep_errors", "job_finishes", "poison_messages"} <= set(counts)


def test_every_metric_is_on_the_dashboard(infra: Infra) -> None:
    charted = " ".join(c["filter"] for c in infra.locals["charts"])
    for name in [*infra.locals["sweep_figures"], *infra.locals["log_counts"]]:
        assert f'local.metric_filter["{name}"]' in charted, name
    for metric in ("run.googleapis.com/request_count", "run.googleapis.com/request_latencies",
                   "pubsub.googleapis.com/subscription/num_undelivered_messages",
                   "pubsub.googleapis.com/subscription/oldest_unacked_message_age"):
        assert metric in charted, metric
    dashboard = infra.resource("google_monitoring_dashboard", "pipeline")
    assert dashboard["dashboard_json"] == "${jsonencode(local.dashboard)}"


def test_the_alerts_notify_the_channels_and_explain_themselves(infra: Infra) -> None:
    policies = infra.resources["google_monitoring_alert_policy"]
    assert set(policies) == {"oldest_pending", "failing_jobs", "dead_letters", "sweep_health",
                             "submit_5xx", "jobs_backlog"}
    for name, policy in policies.items():
        assert policy["notification_channels"] == "${var.notification_channels}", name
        assert len(one_block(policy["documentation"])["content"]) > 80, name
    assert infra.default("notification_channels") == []
    dead = str(policies["dead_letters"]["conditions"])
    for metric in ("dead_letter_message_count", "num_undelivered_messages",
                   "oldest_unacked_message_age"):
        assert metric in dead, metric
    assert "condition_absent" in policies["sweep_health"]["conditions"][0]
    submit = one_block(policies["submit_5xx"]["conditions"])["condition_threshold"][0]
    assert 'response_code_class=\\"5xx\\"' in submit["filter"] and submit["denominator_filter"]
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "## Reading the dashboard" in docs and "## What each alert means" in docs


def test_images_are_cleaned_up_and_the_budget_is_optional(infra: Infra) -> None:
    repo = infra.resource("google_artifact_registry_repository", "functions")
    assert repo["cleanup_policy_dry_run"] is False
    actions = {p["action"] for p in repo["cleanup_policies"]}
    assert actions == {"KEEP", "DELETE"}
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    assert one_block(fn["build_config"])["docker_repository"] == (
        "${google_artifact_registry_repository.functions.id}")
    budget = infra.resource("google_billing_budget", "project")
    assert budget["count"] == '${var.billing_account != "" ? 1 : 0}'
    assert infra.default("billing_account") == ""


def test_alerts_on_log_based_metrics_wait_until_the_metrics_are_visible(infra: Infra) -> None:
    """Issue 26, blocker: an alert policy created seconds after the log-based metric it reads fails
    the first apply with 404 (hashicorp/terraform-provider-google#11102). Every policy whose
    conditions read one (found from its conditions, not a list) waits on a time_sleep that starts
    once every log-based metric exists."""
    sleep = infra.resource("time_sleep", "log_metrics_visible")
    assert sleep["create_duration"] == "${var.log_metric_wait_s}s"
    assert infra.default("log_metric_wait_s") >= 120
    triggers = str(sleep["triggers"])
    for metric in infra.resources["google_logging_metric"]:
        assert f"google_logging_metric.{metric}" in triggers, metric
    reading = {name for name, policy in infra.resources["google_monitoring_alert_policy"].items()
               if "local.metric_filter" in str(policy["conditions"])
               or "logging.googleapis.com/user/" in str(policy["conditions"])}
    assert {"oldest_pending", "failing_jobs", "sweep_health"} <= reading
    for name in reading:
        policy = infra.resource("google_monitoring_alert_policy", name)
        assert "${time_sleep.log_metrics_visible}" in policy.get("depends_on", []), (
            f"alert policy {name} reads a log-based metric but does not wait for it")


def test_a_sweep_that_never_worked_is_noticed(infra: Infra) -> None:
    """Issue 26, item 4: an absence condition fires only after one data point, so sweep_health
    also watches what exists from the first call: Cloud Scheduler's failed attempts (its own
    logs), the sweep's refusals (401/403, once uncounted WARNING lines) and its schema-missing
    skips; and the jobs subscription's oldest unacked message is watched from Pub/Sub's side."""
    conditions = infra.resource("google_monitoring_alert_policy", "sweep_health")["conditions"]
    thresholds = [c["condition_threshold"][0]["filter"] for c in conditions
                  if "condition_threshold" in c]
    for figure in ("scheduler_failures", "sweep_refusals", "sweep_schema_missing"):
        assert f'${{local.metric_filter["{figure}"]}}' in thresholds, figure
    scheduler = infra.resource("google_logging_metric", "scheduler_failures")
    assert scheduler["filter"] == "${local.scheduler_job} AND severity>=ERROR"
    assert 'resource.type=\\"cloud_scheduler_job\\"' in infra.locals["scheduler_job"]
    assert "google_cloud_scheduler_job.sweep.name" in infra.locals["scheduler_job"]
    refusals = infra.locals["log_counts"]["sweep_refusals"]["filter"]
    refused = re.findall(r'jsonPayload\.message=\\"(sweep refused[^"\\]*)\\"', refusals)
    in_code = set(re.findall(r'"(sweep refused: [^"]+)"', CODE))
    assert set(refused) == in_code and len(in_code) == 2  # every refusal the code logs
    backlog = one_block(infra.resource("google_monitoring_alert_policy", "jobs_backlog")[
        "conditions"])["condition_threshold"][0]
    assert "oldest_unacked_message_age" in backlog["filter"]
    assert "${local.jobs_sub}" in backlog["filter"]
    assert "google_pubsub_subscription.process_push.name" in infra.locals["jobs_sub"]
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "fires before the first migration" not in docs
    assert "fires until the first build has migrated" not in infra.text()
