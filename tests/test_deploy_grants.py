"""Issue 26, item 2: each function's IAM grants cover the topics it publishes to and the secrets
it reads. Both sides are derived: the code side from what each function's entry module can reach
(tests/support/code_reach.py: the `*_topic` and secret settings its modules read), the Terraform
side from the grants in infra/iam.tf. `process` publishes to the jobs topic when it releases
parked jobs (Worker._release_parked, through Dispatcher), and had no grant for it."""

from __future__ import annotations

import re
from typing import Any

import pytest

import main
from common.settings import Settings
from tests.support.code_reach import settings_read
from tests.support.terraform import Infra

TOPIC_SETTINGS = {name for name in Settings.model_fields if name.endswith("_topic")}
SECRET_SETTINGS = {name for name, field in Settings.model_fields.items()
                   if "SecretStr" in str(field.annotation) and name != "db_password"}
# A secret setting the code reads only behind a switch that infra/ leaves off. Each entry names
# the switch; test_exemptions_stay_switched_off checks that infra/ never sets it.
SWITCHED_OFF = {("sweep", "auth_hs256_secret"): "SWEEP_ALLOW_DEV_TOKENS"}


@pytest.fixture(scope="module")
def infra() -> Infra:
    return Infra()


def _functions_of(grant: dict[str, Any]) -> set[str]:
    """The functions whose service account a grant names: `function["x"]`, or each.key over a
    toset([...]) of names or over local.secret_env's functions holding one variable."""
    member = grant["member"]
    fixed = re.fullmatch(r'serviceAccount:\$\{google_service_account\.function\["(\w+)"\]\.email\}',
                         member)
    if fixed:
        return {fixed.group(1)}
    if member != "serviceAccount:${google_service_account.function[each.key].email}":
        return set()
    for_each = grant["for_each"]
    listed = re.fullmatch(r"\$\{toset\(\[(.*)\]\)\}", for_each)
    if listed and "for " not in listed.group(1):
        return set(re.findall(r'"(\w+)"', listed.group(1)))
    holding = re.fullmatch(r'\$\{toset\(\[for f, env in local\.secret_env : f if '
                           r'contains\(keys\(env\), "(\w+)"\)\]\)\}', for_each)
    if holding:
        return {f for f, env in Infra().locals["secret_env"].items() if holding.group(1) in env}
    raise AssertionError(f"a grant's for_each this test cannot read: {for_each}")


def _publishers(infra: Infra) -> dict[str, set[str]]:
    """Topic resource name -> functions granted roles/pubsub.publisher on it."""
    granted: dict[str, set[str]] = {}
    for grant in infra.resources["google_pubsub_topic_iam_member"].values():
        topic = re.fullmatch(r"\$\{google_pubsub_topic\.(\w+)\.id\}", grant["topic"])
        if topic and grant["role"] == "roles/pubsub.publisher":
            granted.setdefault(topic.group(1), set()).update(_functions_of(grant))
    return granted


def _topic_resource(infra: Infra, setting: str) -> str:
    value = infra.locals["common_env"][setting.upper()]
    found = re.fullmatch(r"\$\{google_pubsub_topic\.(\w+)\.name\}", value)
    assert found, f"{setting.upper()} is not a topic of infra/: {value}"
    return found.group(1)


def test_the_code_side_is_found() -> None:
    """The derivation sees what we know: a guard against it silently finding nothing."""
    assert {"jobs_topic", "results_topic"} == TOPIC_SETTINGS
    assert {"auth_hs256_secret", "webhook_secret_key"} <= SECRET_SETTINGS
    assert set(settings_read("functions.process", TOPIC_SETTINGS)) == TOPIC_SETTINGS
    assert set(settings_read("functions.submit", TOPIC_SETTINGS)) == {"jobs_topic"}


@pytest.mark.parametrize("function", main.__all__)
def test_each_function_may_publish_to_every_topic_it_publishes_to(
    infra: Infra, function: str,
) -> None:
    granted = _publishers(infra)
    for setting, readers in settings_read(f"functions.{function}", TOPIC_SETTINGS).items():
        topic = _topic_resource(infra, setting)
        assert function in granted.get(topic, set()), (
            f"{function} publishes to google_pubsub_topic.{topic} ({setting}, read in "
            f"{sorted(readers)}) but holds no roles/pubsub.publisher on it")


@pytest.mark.parametrize("function", main.__all__)
def test_each_function_is_given_and_may_read_every_secret_it_reads(
    infra: Infra, function: str,
) -> None:
    readers: dict[str, set[str]] = {}
    for grant in infra.resources["google_secret_manager_secret_iam_member"].values():
        secret = re.fullmatch(r"\$\{data\.google_secret_manager_secret\.(\w+)\.id\}",
                              grant["secret_id"])
        if secret and grant["role"] == "roles/secretmanager.secretAccessor":
            readers.setdefault(secret.group(1), set()).update(_functions_of(grant))
    given = infra.locals["secret_env"][function]
    for setting in settings_read(f"functions.{function}", SECRET_SETTINGS):
        if (function, setting) in SWITCHED_OFF:
            continue
        assert setting.upper() in given, f"{function} reads {setting} but is not given it"
    for variable, ref in given.items():
        secret = re.fullmatch(r"\$\{data\.google_secret_manager_secret\.(\w+)\.secret_id\}", ref)
        assert secret, ref
        assert function in readers.get(secret.group(1), set()), (
            f"{function} is given {variable} from secret {secret.group(1)} but may not read it")


def test_exemptions_stay_switched_off(infra: Infra) -> None:
    for (function, setting), switch in SWITCHED_OFF.items():
        assert switch not in infra.text(), f"{switch} set in infra/: {function} reads {setting}"
        assert setting in settings_read(f"functions.{function}", SECRET_SETTINGS)
