"""The webhook key reaches the functions that read it (offline, in the style of
tests/test_deploy_first_try.py: python-hcl2 over infra/ and the shell blocks of docs/deploy.md;
each test named after what it keeps true)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from common.settings import load_settings
from localstack.paths import ROOT
from tests.support.terraform import Infra, one_block
from tests.test_deploy_first_try import DOCS, doc_commands, first

# Which function reads each setting, from the code:
# - WEBHOOK_SECRET_KEY: submit seals a new secret (common/api/submit.py, seal); process
#   (functions/process.py) and sweep (common/maintenance/sweep.py) build a WebhookDeliverer,
#   which opens them to sign (common/messaging/webhooks.py, unseal).
READERS = {
    "WEBHOOK_SECRET_KEY": {"submit", "process", "sweep"},
}
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

