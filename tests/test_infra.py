"""Offline checks of the deployment: infra/*.tf parse and hold the properties the promise needs,
checkov passes, and cloudbuild.yaml is valid and consistent with the code. No cloud access."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import main
from common.settings import Settings
from localstack.paths import ROOT
from tests.support.terraform import Infra, one_block

CHECKOV = ROOT / ".venv" / "tools" / "bin" / "checkov"


@pytest.fixture(scope="module")
def infra() -> Infra:
    return Infra()



def test_every_tf_file_parses(infra: Infra) -> None:
    assert set(infra.files) >= {"versions.tf", "variables.tf", "pubsub.tf", "sql.tf",
                                "functions.tf", "iam.tf", "scheduler.tf", "outputs.tf",
                                "secrets.tf", "apis.tf", "build.tf", "artifacts.tf",
                                "monitoring.tf", "budget.tf"}
    assert all(doc for doc in infra.files.values())


def test_push_subscription_has_dead_letters_retries_and_oidc(infra: Infra) -> None:
    sub = infra.resource("google_pubsub_subscription", "process_push")
    dead = one_block(sub["dead_letter_policy"])
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert 5 <= infra.default("max_delivery_attempts") <= 100
    retry = one_block(sub["retry_policy"])
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    push = one_block(sub["push_config"])
    oidc = one_block(push["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.push.email}"
    # The sweep's dead-letter subscription reads that topic.
    dead_sub = infra.resource("google_pubsub_subscription", "dead_letters")
    assert dead_sub["topic"] == "${google_pubsub_topic.dead_letter.id}"


def test_ack_deadline_is_no_shorter_than_process_timeout(infra: Infra) -> None:
    sub = infra.resource("google_pubsub_subscription", "process_push")
    assert sub["ack_deadline_seconds"] == "${var.ack_deadline_s}"
    process = infra.locals["fn"]["process"]
    assert process["timeout"] == "${var.ack_deadline_s}"  # equal: the deadline is not shorter
    assert 10 <= infra.default("ack_deadline_s") <= 600
    # The worker is told the same deadline, so handlers' limits are cut below it.
    assert infra.locals["common_env"]["ACK_DEADLINE_S"] == "${tostring(var.ack_deadline_s)}"


def test_pubsub_agent_may_forward_dead_letters(infra: Infra) -> None:
    publisher = infra.resource("google_pubsub_topic_iam_member", "agent_dead_letter_publisher")
    assert (publisher["topic"], publisher["role"]) == (
        "${google_pubsub_topic.dead_letter.id}", "roles/pubsub.publisher")
    subscriber = infra.resource("google_pubsub_subscription_iam_member",
                                "agent_source_subscriber")
    assert (subscriber["subscription"], subscriber["role"]) == (
        "${google_pubsub_subscription.process_push.id}", "roles/pubsub.subscriber")
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in infra.locals["pubsub_agent"]


def test_no_public_invoker_unless_switched_on(infra: Infra) -> None:
    assert infra.default("allow_public_submit") is False
    assert infra.default("submit_invokers") == []
    submit = infra.resource("google_cloud_run_service_iam_member", "submit_invoker")
    assert submit["for_each"] == (
        '${toset(var.allow_public_submit ? ["allUsers"] : var.submit_invokers)}'
    )
    # allUsers appears nowhere else; allAuthenticatedUsers nowhere at all.
    assert infra.text().count('"allUsers"') == 1
    assert "allAuthenticatedUsers" not in infra.text()
    for name in ("process_invoker", "sweep_invoker"):
        member = infra.resource("google_cloud_run_service_iam_member", name)["member"]
        assert member.startswith("serviceAccount:${google_service_account.")


def test_scheduler_calls_sweep_with_oidc_and_sweep_accepts_only_it(infra: Infra) -> None:
    job = infra.resource("google_cloud_scheduler_job", "sweep")
    target = one_block(job["http_target"])
    oidc = one_block(target["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"
    # The audience is the function URL that sweep checks; the target is the run.app URL, the one
    # internal-only ingress admits Scheduler on (issue 13, item 8: tests/test_deploy_first_try.py).
    assert oidc["audience"] == '${local.url["sweep"]}'
    assert target["uri"] == '${google_cloudfunctions2_function.fn["sweep"].service_config[0].uri}'
    env = infra.locals["fn"]["sweep"]["env"]
    assert env["SWEEP_AUDIENCE"] == '${local.url["sweep"]}'
    assert env["SWEEP_ALLOWED_INVOKERS"] == (
        "${jsonencode([google_service_account.scheduler.email])}"
    )
    assert "SWEEP_ALLOW_DEV_TOKENS" not in infra.text()
    assert infra.default("sweep_time_budget_s") < infra.default("sweep_timeout_s")


def test_connection_arithmetic_holds_for_the_defaults(infra: Infra) -> None:
    instances = infra.default("max_instances")
    per_instance = infra.default("db_pool_size") + infra.default("db_max_overflow")
    budget = infra.default("db_max_connections") - infra.default("db_reserved_connections")
    # Headroom (issue 26): Cloud Run may briefly exceed max instances.
    overshoot = infra.default("instance_overshoot_ratio")
    assert overshoot >= 0.2
    assert math.ceil(sum(instances.values()) * per_instance * (1 + overshoot)) <= budget
    # The Terraform defaults are the settings' own defaults.
    defaults = Settings.model_fields
    assert infra.default("db_pool_size") == defaults["db_pool_size"].default
    assert infra.default("db_max_overflow") == defaults["db_max_overflow"].default
    # ... and the plan refuses values that break it.
    preconditions = one_block(infra.resource("google_cloudfunctions2_function", "fn")["lifecycle"])
    conditions = [p["condition"] for p in preconditions["precondition"]]
    assert "${local.connections_with_headroom <= local.connection_budget}" in conditions
    assert infra.locals["connections_with_headroom"] == (
        "${ceil(local.connections_needed * (1 + var.instance_overshoot_ratio))}")


def test_cloud_sql_is_protected_and_uses_iam_logins(infra: Infra) -> None:
    instance = infra.resource("google_sql_database_instance", "jobs")
    version = int(re.sub(r"\D", "", instance["database_version"]))
    assert version >= 15
    assert infra.default("deletion_protection") is True
    settings = one_block(instance["settings"])
    backup = one_block(settings["backup_configuration"])
    assert backup["enabled"] is True and backup["point_in_time_recovery_enabled"] is True
    # Hardening (issue 13): API-level deletion protection, a maintenance window, a disk limit.
    assert settings["deletion_protection_enabled"] == "${var.deletion_protection}"
    assert instance["deletion_protection"] == "${var.deletion_protection}"
    window = one_block(settings["maintenance_window"])
    assert {"day", "hour", "update_track"} <= set(window)
    assert settings["disk_autoresize"] is True
    assert settings["disk_autoresize_limit"] == "${var.db_disk_autoresize_limit_gb}"
    assert infra.default("db_disk_autoresize_limit_gb") > 10
    flags = {f["name"]: f["value"] for f in settings["database_flags"]}
    assert flags["cloudsql.iam_authentication"] == "on"
    assert flags["max_connections"] == "${tostring(var.db_max_connections)}"
    assert flags["log_min_duration_statement"] == "-1"  # statement text never logged
    ip = one_block(settings["ip_configuration"])
    assert ip["ipv4_enabled"] == "${!var.db_private_ip}"
    assert "authorized_networks" not in ip
    users = infra.resource("google_sql_user", "function")
    assert users["type"] == "CLOUD_IAM_SERVICE_ACCOUNT"


def test_each_function_has_its_own_account_and_the_secret_comes_from_secret_manager(
    infra: Infra,
) -> None:
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    service = one_block(fn["service_config"])
    assert service["service_account_email"] == (
        "${google_service_account.function[each.key].email}"
    )
    plain = str(infra.locals["common_env"]) + str(infra.locals["fn"])
    assert "AUTH_HS256_SECRET" not in plain + str(service["environment_variables"])
    dynamic = one_block(service["dynamic"])["secret_environment_variables"]
    assert dynamic["for_each"] == "${local.secret_env[each.key]}"
    secret = one_block(dynamic["content"])
    assert secret["key"] == "${secret_environment_variables.key}"
    assert secret["secret"] == "${secret_environment_variables.value}"
    assert infra.locals["secret_env"]["submit"]["AUTH_HS256_SECRET"] == (
        "${data.google_secret_manager_secret.hs256.secret_id}")
    assert all("AUTH_HS256_SECRET" not in infra.locals["secret_env"][f]
               for f in ("process", "sweep"))
    readers = infra.resource("google_secret_manager_secret_iam_member", "hs256_reader")
    assert readers["member"] == 'serviceAccount:${google_service_account.function["submit"].email}'


def test_every_environment_variable_is_a_setting(infra: Infra) -> None:
    """A typo in a variable name would be silently ignored by the functions."""
    names = set(infra.locals["common_env"])
    for fn in infra.locals["fn"].values():
        names |= set(fn["env"])
    for secrets in infra.locals["secret_env"].values():
        names |= set(secrets)
    names |= {"DB_USER"}
    # LOG_EXECUTION_ID is the Cloud Functions API's own (it adds it to every gen2 function):
    # stated in Terraform so that later plans show no diff, and read by no code of ours.
    service = one_block(infra.resource("google_cloudfunctions2_function", "fn")[
        "service_config"])
    assert "LOG_EXECUTION_ID = \"true\"" in infra.text()
    assert "LOG_EXECUTION_ID" in service["environment_variables"]
    known = {name.upper() for name in Settings.model_fields}
    assert names - known == set()


def test_entry_points_exist() -> None:
    fn = Infra().resource("google_cloudfunctions2_function", "fn")
    assert one_block(fn["build_config"])["entry_point"] == "${each.key}"
    assert sorted(Infra().locals["fn"]) == sorted(main.__all__)
    for name in main.__all__:
        assert callable(getattr(main, name))


def test_outputs_name_what_a_user_needs(infra: Infra) -> None:
    assert {"submit_url", "instance_connection_name", "results_topic",
            "dead_letter_subscription", "hs256_secret", "db_users"} <= set(infra.outputs)


def test_checkov_passes_with_every_skip_justified() -> None:
    if not CHECKOV.exists():
        raise AssertionError(f"{CHECKOV} is missing: run `make install` (requirements-tools.txt)")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(ROOT / "infra"), "--framework", "terraform", "--compact",
         "--quiet", "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Failed checks: 0" in done.stdout
    for path in (ROOT / "infra").glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:  # a reason follows the check id
                assert re.search(r"checkov:skip=CKV2?_\w+: \S.{20,}", line), line


# -- cloudbuild.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return loaded


def test_cloudbuild_matches_cloud_builds_schema() -> None:
    done = subprocess.run(
        [str(Path(ROOT / ".venv" / "bin" / "check-jsonschema")), "--builtin-schema",
         "vendor.cloudbuild", str(ROOT / "cloudbuild.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_cloudbuild_checks_then_migrates_through_the_connector_then_deploys(
    build: dict[str, Any],
) -> None:
    steps = {s["id"]: s for s in build["steps"]}
    assert next(iter(steps)) == "preflight"
    migrate = steps["migrate"]
    assert migrate["waitFor"] == ["preflight"]
    env = dict(e.split("=", 1) for e in migrate["env"])
    assert env["INSTANCE_CONNECTION_NAME"] == "${_INSTANCE}"  # connector, not an allow-listed IP
    assert env["DB_IP_TYPE"] == "${_DB_IP_TYPE}"
    assert "DATABASE_URL" not in env
    assert "requirements.txt" in migrate["args"][-1]
    assert "python main.py migrate" in migrate["args"][-1]
    assert migrate["secretEnv"] == ["DB_PASSWORD"]
    deployed = set()
    for step_id, step in steps.items():
        if step_id.startswith("deploy-"):
            assert step["waitFor"] == ["migrate"]
            args = step["args"]
            entry = next(a.split("=", 1)[1] for a in args if a.startswith("--entry-point="))
            assert entry in main.__all__ and "--source=." in args
            deployed.add(entry)
    assert deployed == set(main.__all__)
    assert {"_REGION", "_NAME", "_INSTANCE", "_DB_IP_TYPE", "_DB_APP_USERS"} <= set(
        build["substitutions"])


def test_secrets_are_pinned_to_versions_not_latest(infra: Infra) -> None:
    """With `latest`, a new webhook-key version reached new instances without a deploy, and the
    fleet mixed two keys until every old instance was gone."""
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    dynamic = one_block(one_block(fn["service_config"])["dynamic"])["secret_environment_variables"]
    version = one_block(dynamic["content"])["version"]
    assert version == "${local.secret_version[secret_environment_variables.value]}"
    assert not re.search(r'version\s*=\s*"latest"', infra.text())
    pinned = infra.locals["secret_version"]
    for secrets in infra.locals["secret_env"].values():
        for ref in secrets.values():
            assert "${(" + ref[2:-1] + ")}" in pinned, ref
    assert infra.default("hs256_secret_version") == infra.default("webhook_key_secret_version")
    assert infra.default("hs256_secret_version").isdigit()


def test_grants_are_narrow_and_idle_cost_has_a_trial_profile(infra: Infra) -> None:
    build = infra.resource("google_project_iam_member", "build_reads_sources")
    expression = one_block(build["condition"])["expression"]
    assert "${var.source_bucket}" in expression and "gcf-v2-sources-" in expression
    assert infra.default("db_availability_type") == "REGIONAL"
    sql = one_block(infra.resource("google_sql_database_instance", "jobs")["settings"])
    assert sql["availability_type"] == "${var.db_availability_type}"
    # At idle the default profile costs about 105 a month: the budget must not fire every month.
    budget = infra.resource("google_billing_budget", "project")
    lowest = min(r["threshold_percent"] for r in budget["threshold_rules"])
    assert infra.default("budget_amount") * lowest > 110
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "## What it costs" in docs and "db_availability_type" in docs
