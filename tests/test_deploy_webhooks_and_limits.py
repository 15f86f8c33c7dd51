"""The webhook key, and the fair-share, schedule and webhook settings, reach the functions that
read them (offline, in the style of tests/test_deploy_first_try.py: python-hcl2 over infra/ and
the shell blocks of docs/deploy.md; each test named after what it keeps true)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from common.settings import Settings, SettingsError, load_settings
from localstack.paths import ROOT
from tests.support.terraform import Infra, one_block
from tests.test_deploy_first_try import DOCS, doc_commands, first

# Which function reads each setting, from the code:
# - WEBHOOK_SECRET_KEY: submit seals a new secret (common/api/submit.py, seal); process
#   (functions/process.py) and sweep (common/maintenance/sweep.py) build a WebhookDeliverer,
#   which opens them to sign (common/messaging/webhooks.py, unseal).
# - OWNER_MAX_RUNNING: process's claim and take_parked (common/store/worker_moves.py,
#   fair_share.py), the sweep's parked step (take_parked_all).
# - MAX_RUN_AHEAD_DAYS, MAX_SCHEDULES_PER_OWNER, SCHEDULE_MIN_INTERVAL_S: creating jobs and
#   schedules (common/store/callers.py, schedules.py), submit's API only.
# - WEBHOOK_MAX_ATTEMPTS, WEBHOOK_TIMEOUT_S: the WebhookDeliverer (process and sweep);
#   WEBHOOK_ROTATION_GRACE_S: POST /webhook-secret/rotate (submit).
READERS = {
    "WEBHOOK_SECRET_KEY": {"submit", "process", "sweep"},
    "OWNER_MAX_RUNNING": {"process", "sweep"},
    "MAX_RUN_AHEAD_DAYS": {"submit"},
    "MAX_SCHEDULES_PER_OWNER": {"submit"},
    "SCHEDULE_MIN_INTERVAL_S": {"submit"},
    "WEBHOOK_MAX_ATTEMPTS": {"process", "sweep"},
    "WEBHOOK_TIMEOUT_S": {"process", "sweep"},
    "WEBHOOK_ROTATION_GRACE_S": {"submit"},
}
TUNABLES = [name for name in READERS if name != "WEBHOOK_SECRET_KEY"]
KEY_SECRET = "${data.google_secret_manager_secret.webhook_key.secret_id}"


@pytest.fixture(scope="module")
def infra() -> Infra:
    return Infra()


@pytest.fixture(scope="module")
def commands() -> list[str]:
    return doc_commands(DOCS.read_text())


def _code(path: str) -> str:
    return (ROOT / path).read_text()


# -- the webhook key ------------------------------------------------------------------------------


def test_webhook_key_readers_are_the_functions_whose_code_seals_or_opens_secrets() -> None:
    # The table above, held against the code it names, so that a new reader is noticed.
    assert "seal(secret, owner, self.settings.webhook_secret_key)" in _code("common/api/submit.py")
    assert "unseal(" in _code("common/messaging/webhooks.py")
    assert "WebhookDeliverer(" in _code("functions/process.py")
    assert "WebhookDeliverer(" in _code("common/maintenance/sweep.py")
    assert "from common.maintenance.sweep import Sweeper" in _code("functions/sweep.py")


def test_webhook_key_is_created_with_a_version_before_apply_and_never_by_terraform(
    infra: Infra, commands: list[str],
) -> None:
    key = infra.data["google_secret_manager_secret"]["webhook_key"]
    assert key["secret_id"] == "${var.name}-webhook-secret-key"
    assert "google_secret_manager_secret_version" not in infra.resources
    assert "google_secret_manager_secret" not in infra.resources
    create = r"gcloud secrets create \$NAME-webhook-secret-key .*--data-file=-"
    assert first(commands, create) < first(commands, r"terraform\b.*\bapply\b")


def test_webhook_key_the_docs_generate_is_one_the_functions_accept(commands: list[str]) -> None:
    command = commands[first(commands, r"gcloud secrets create \$NAME-webhook-secret-key")]
    generator = command.split("| gcloud")[0]
    bash = shutil.which("bash")
    assert bash
    made = subprocess.run([bash, "-c", generator], capture_output=True, text=True, timeout=30,
                          check=True).stdout
    # The value exactly as Secret Manager stores it and Cloud Run hands it over (no strip).
    settings = load_settings(database_url="postgresql+pg8000://u@h/db",
                             webhook_secret_key=made, production=True)
    assert settings.webhook_secret_key is not None


def test_webhook_key_goes_to_every_function_that_reads_it(infra: Infra) -> None:
    secret_env = infra.locals["secret_env"]
    given = {f for f, env in secret_env.items() if "WEBHOOK_SECRET_KEY" in env}
    assert given == READERS["WEBHOOK_SECRET_KEY"]
    assert all(secret_env[f]["WEBHOOK_SECRET_KEY"] == KEY_SECRET for f in given)
    # As a secret, never as a plain variable (which would put it in the state and the console).
    for fn in infra.locals["fn"].values():
        assert "WEBHOOK_SECRET_KEY" not in fn["env"]
    assert "WEBHOOK_SECRET_KEY" not in infra.locals["common_env"]
    service = one_block(infra.resource("google_cloudfunctions2_function", "fn")["service_config"])
    dynamic = one_block(service["dynamic"])["secret_environment_variables"]
    assert dynamic["for_each"] == "${local.secret_env[each.key]}"
    assert one_block(dynamic["content"])["version"] == "latest"


def test_webhook_key_accessor_goes_to_exactly_its_readers_and_the_functions_wait(
    infra: Infra,
) -> None:
    reader = infra.resource("google_secret_manager_secret_iam_member", "webhook_key_reader")
    # The grant's set is computed from the secret's readers in local.secret_env, so it can be
    # neither wider nor narrower than the functions that get the variable.
    assert reader["for_each"] == (
        '${toset([for f, env in local.secret_env : f if contains(keys(env), '
        '"WEBHOOK_SECRET_KEY")])}')
    assert reader["secret_id"] == "${data.google_secret_manager_secret.webhook_key.id}"
    assert reader["role"] == "roles/secretmanager.secretAccessor"
    assert reader["member"] == (
        "serviceAccount:${google_service_account.function[each.key].email}")
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    # Cloud Run checks the runtime account's access when it deploys a revision.
    assert "${google_secret_manager_secret_iam_member.webhook_key_reader}" in fn["depends_on"]
    # No other grant on the key (a wider reader would slip past the check above).
    others = [name for name, r in infra.resources["google_secret_manager_secret_iam_member"].items()
              if "webhook_key" in r["secret_id"] and name != "webhook_key_reader"]
    assert others == []


def test_webhook_key_rotation_is_documented_as_the_code_supports_it() -> None:
    docs = DOCS.read_text()
    rotating = docs[docs.index("## Rotating secrets"):]
    assert "**Webhook key (`WEBHOOK_SECRET_KEY`).** Keep it" in rotating
    # What the code does with a key that does not open a sealed secret ...
    message = "sealed secret does not open with WEBHOOK_SECRET_KEY"
    assert message in _code("common/messaging/signing.py") and message in rotating
    # ... and the one way out it has: owners making new secrets.
    assert "POST /webhook-secret/rotate` **twice**" in rotating
    assert re.search(r"gcloud secrets versions add \$NAME-webhook-secret-key", rotating)


# -- fair share, schedules and webhooks as Terraform variables ------------------------------------


def _bounds(setting: str) -> tuple[str, float | None, float | None]:
    """('>=' or '>', lower, upper) of a setting's Field, as common/settings.py declares them."""
    field = Settings.model_fields[setting.lower()]
    op, low, high = ">=", None, None
    for meta in field.metadata:  # annotated_types' Ge, Gt and Le, as pydantic keeps them
        if getattr(meta, "ge", None) is not None:
            low = meta.ge
        elif getattr(meta, "gt", None) is not None:
            op, low = ">", meta.gt
        elif getattr(meta, "le", None) is not None:
            high = meta.le
    return op, low, high


def _hcl(number: float) -> str:
    """A bound as written in a .tf file: 2592000, not 2592000.0."""
    return str(int(number)) if float(number).is_integer() else str(number)


@pytest.mark.parametrize("setting", TUNABLES)
def test_tunable_is_a_variable_with_the_settings_default_and_bounds(
    infra: Infra, setting: str,
) -> None:
    name = setting.lower()
    variable = infra.variables.get(name)
    assert variable is not None, f"no variable {name} in infra/variables.tf"
    field = Settings.model_fields[name]
    assert variable["default"] == field.default
    condition = one_block(variable["validation"])["condition"]
    op, low, high = _bounds(setting)
    assert low is not None and high is not None
    assert f"var.{name} {op} {_hcl(low)}" in condition, condition
    assert f"var.{name} <= {_hcl(high)}" in condition, condition
    if field.annotation is int:  # pydantic refuses "1.5" for an int at start-up
        assert f"floor(var.{name}) == var.{name}" in condition, condition


@pytest.mark.parametrize("setting", TUNABLES)
def test_tunable_is_passed_to_exactly_the_functions_that_read_it(
    infra: Infra, setting: str,
) -> None:
    expression = f"${{tostring(var.{setting.lower()})}}"
    given = {f for f, c in infra.locals["fn"].items() if c["env"].get(setting) == expression}
    assert given == READERS[setting], f"{setting}: given to {given}, read by {READERS[setting]}"
    assert setting not in infra.locals["common_env"]


def test_tunables_are_in_the_deploy_guide_and_the_settings_table(infra: Infra) -> None:
    docs, settings = DOCS.read_text(), (ROOT / "docs" / "settings.md").read_text()
    for setting in TUNABLES:
        assert f"`{setting.lower()}`" in docs, setting
        row = next(line for line in settings.splitlines() if line.startswith(f"| `{setting}`"))
        assert f"`{setting.lower()}`" in row, f"docs/settings.md's row for {setting}"


def test_owner_max_running_validation_refuses_what_settings_refuse(infra: Infra) -> None:
    """The condition, evaluated for a few values the way Terraform would, against pydantic."""
    condition = one_block(infra.variables["owner_max_running"]["validation"])["condition"]
    body = condition.removeprefix("${").removesuffix("}")
    python = body.replace("&&", " and ").replace("var.owner_max_running", "v")
    for value in (-1, 0, 2, 2.5, 100_000, 100_001):
        accepted = eval(python, {"floor": int}, {"v": value})  # noqa: S307 - our own .tf text
        try:
            load_settings(database_url="postgresql+pg8000://u@h/db", owner_max_running=value)
            allowed = True
        except SettingsError:
            allowed = False
        assert accepted == allowed, (value, accepted, allowed)
