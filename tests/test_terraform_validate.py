"""A real `terraform validate` of infra/, offline (issue 26): Terraform 1.11 checks every argument,
block and reference against the google provider 6.50.0's schema and the time provider 0.13.1's,
served from the @cdktf packages' manifests by tests/terraform/provider_plugin.py. A fault planted
in a copy of infra/ must fail it, so a passing run means the schema was really consulted."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support.terraform import INFRA, validate


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "infra"
    shutil.copytree(INFRA, target, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    return target


def test_infra_is_valid_against_the_providers_schemas(tmp_path: Path) -> None:
    done = validate(_copy(tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success! The configuration is valid" in done.stdout


# (file, what to replace, its replacement, the error Terraform must print)
FAULTS = {
    "misspelled argument": ("pubsub.tf", "ack_deadline_seconds", "ack_deadline_secs",
                            "Unsupported argument"),
    "misspelled time_sleep argument": ("monitoring.tf", "create_duration =", "create_duraton =",
                                       "Unsupported argument"),
    "missing required argument": ("pubsub.tf", r"\n  topic\s+= google_pubsub_topic\.jobs\.id",
                                  "\n", "Missing required argument"),
    "misspelled exported attribute": ("pubsub.tf", r"google_service_account\.push\.email\b",
                                      "google_service_account.push.emial",
                                      "Unsupported attribute"),
    "misplaced block": ("pubsub.tf", r"\n  push_config \{", "\n  push_configuration {",
                        "Unsupported block type"),
    "wrong type of a constant": ("functions.tf", r"min_instance_count\s+= 0",
                                 'min_instance_count = "none"', "Incorrect attribute value type"),
    "unknown resource type": ("monitoring.tf", 'resource "google_monitoring_dashboard"',
                              'resource "google_monitoring_dashbord"',
                              "does not support resource type"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_planted_fault_fails_validation(fault: str, tmp_path: Path) -> None:
    name, pattern, replacement, error = FAULTS[fault]
    infra = _copy(tmp_path)
    path = infra / name
    text = path.read_text()
    planted, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, f"{fault}: {pattern!r} no longer in {name}; plant the fault elsewhere"
    path.write_text(planted)
    done = validate(infra, tmp_path)
    assert done.returncode != 0, f"{fault} passed validation:\n{done.stdout}"
    assert error in done.stderr + done.stdout, done.stderr
