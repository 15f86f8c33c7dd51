"""The first deploy works from docs/deploy.md alone (issue 13): one offline check per defect the
review found, each named after its item so that putting the defect back names what broke.

No cloud access and no provider download: python-hcl2 over infra/, cloudbuild.yaml read as YAML
and its preflight script run with bash, `.gcloudignore` applied the way gcloud applies it, and
the commands of docs/deploy.md read from its shell blocks. Migration 0004 (item 13) is checked
against a real PostgreSQL in tests/test_deploy_default_privileges.py.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from localstack.paths import ROOT
from tests.support.terraform import Infra, one_block

DOCS = ROOT / "docs" / "deploy.md"

# Cloud Build's built-in substitutions (cloud.google.com/build/docs/configuring-builds/
# substitute-variable-values): anything else in ${...} must be declared in `substitutions:`.
BUILTIN_SUBSTITUTIONS = {
    "PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME", "COMMIT_SHA",
    "SHORT_SHA", "REVISION_ID", "BRANCH_NAME", "TAG_NAME", "REF_NAME", "REPO_NAME",
    "REPO_FULL_NAME", "TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT",
}


@pytest.fixture(scope="module")
def infra() -> Infra:
    return Infra()


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def commands() -> list[str]:
    return doc_commands(DOCS.read_text())



def doc_commands(markdown: str) -> list[str]:
    """The shell commands of the ```sh blocks, in order, continuation lines joined."""
    found: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        found += [line.strip() for line in joined.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    return found


def first(commands: list[str], pattern: str) -> int:
    for i, command in enumerate(commands):
        if re.search(pattern, command):
            return i
    raise AssertionError(f"no command in docs/deploy.md matches {pattern!r}")


def gcloud_dict_arg(value: str) -> dict[str, str]:
    """How gcloud reads a dict flag such as --substitutions (`gcloud topic escaping`): split on
    ',' unless the value starts with ^DELIM^; every item must be KEY=VALUE, else gcloud fails
    with "Bad syntax for dict arg"."""
    delimiter = ","
    if match := re.match(r"\^([^^]+)\^", value):
        delimiter, value = match.group(1), value[match.end():]
    parsed: dict[str, str] = {}
    for item in value.split(delimiter):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"Bad syntax for dict arg: [{item}]")
        parsed[key] = val
    return parsed


class GcloudIgnore:
    """The subset of .gcloudignore syntax this repository uses (gitignore-style patterns;
    'dir/' matches a directory anywhere; no negation, no #!include)."""

    def __init__(self, text: str) -> None:
        self.patterns = [line.strip() for line in text.splitlines()
                         if line.strip() and not line.startswith("#")]
        assert not any(p.startswith("!") for p in self.patterns), "negation is not modelled"

    def ignored(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        for pattern in self.patterns:
            directory = pattern.endswith("/")
            bare = pattern.strip("/")
            if "/" in bare:  # anchored to the root
                if path.strip("/") == bare or path.startswith(bare + "/"):
                    return True
                continue
            candidates = parts[:-1] if directory and not path.endswith("/") else parts
            if any(fnmatch.fnmatch(part, bare) for part in candidates):
                return True
        return False


# -- 1. the secret exists with a version before the function; the grant comes first ---------------


def test_item01_secret_is_created_before_apply_and_never_by_terraform(
    infra: Infra, commands: list[str],
) -> None:
    # No secret and no secret version in Terraform's state: both are read as data sources.
    assert "google_secret_manager_secret_version" not in infra.resources
    assert "google_secret_manager_secret" not in infra.resources
    assert set(infra.data["google_secret_manager_secret"]) == {
        "hs256", "db_admin_password", "webhook_key"}
    # The docs create both, with a first version, before the first `terraform apply`.
    apply = first(commands, r"terraform\b.*\bapply\b")
    assert first(commands, r"gcloud secrets create \$NAME-hs256-secret .*--data-file=-") < apply
    admin = r"gcloud secrets create \$NAME-db-admin-password .*--data-file=-"
    assert first(commands, admin) < apply


def test_item01_the_accessor_grant_is_a_dependency_of_the_function(infra: Infra) -> None:
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    assert "${google_secret_manager_secret_iam_member.hs256_reader}" in fn["depends_on"]
    reader = infra.resource("google_secret_manager_secret_iam_member", "hs256_reader")
    assert reader["secret_id"] == "${data.google_secret_manager_secret.hs256.id}"


# -- 2. substitutions that gcloud can split -------------------------------------------------------


def test_item02_the_substitutions_flag_survives_gclouds_dict_parsing(
    infra: Infra, build: dict[str, Any], commands: list[str],
) -> None:
    expression = infra.locals["build_substitutions_flag"]
    match = re.fullmatch(
        r'\^(.+)\^\$\{join\("(.+)", \[for k, v in local\.build_substitutions : '
        r'"\$\{k\}=\$\{v\}"\]\)\}', expression)
    assert match, f"unexpected shape of build_substitutions_flag: {expression}"
    head, joiner = match.group(1, 2)
    assert head == joiner, "the ^DELIM^ prefix must name the delimiter the items are joined with"
    # Render it for a real-looking deployment and read it back the way gcloud does.
    sample = {
        "_REGION": "europe-west1", "_NAME": "jobs",
        "_INSTANCE": "my-project:europe-west1:jobs-db", "_DB_IP_TYPE": "PUBLIC",
        "_DB_APP_USERS": ",".join(f"jobs-{f}@my-project.iam" for f in ("submit", "process",
                                                                         "sweep")),
    }
    assert set(infra.locals["build_substitutions"]) == set(sample)
    rendered = f"^{head}^" + joiner.join(f"{k}={v}" for k, v in sample.items())
    assert gcloud_dict_arg(rendered) == sample
    # The docs pass exactly that output, quoted, and any literal --substitutions parses too.
    submit = commands[first(commands, r"gcloud builds submit")]
    assert '--substitutions="$(terraform -chdir=infra output -raw build_substitutions)"' in submit
    for command in commands:
        for literal in re.findall(r"--substitutions=([^\s\"'$]+)", command):
            assert set(gcloud_dict_arg(literal)) <= set(build["substitutions"]), literal


def test_item02_output_is_the_flag(infra: Infra) -> None:
    assert infra.outputs["build_substitutions"]["value"] == "${local.build_substitutions_flag}"


# -- 3. the build runs no tests from an archive that leaves them out ------------------------------


def _paths_a_step_needs(step: dict[str, Any]) -> set[str]:
    text = " ".join(str(a) for a in step.get("args", [])) + " " + step.get("entrypoint", "")
    needs = {name for name in ("requirements.txt", "main.py", "alembic.ini", "Makefile",
                               "pyproject.toml", "requirements-dev.txt") if name in text}
    if re.search(r"\bmake\b|\bpytest\b", text):  # the suite and its harness
        needs |= {"Makefile", "pyproject.toml", "requirements-dev.txt", "tests/conftest.py",
                  "tests/test_infra.py", "localstack/paths.py"}
    if "main.py migrate" in text:
        # the CLI package, and the client package it is built on (main.py puts client/ on the path)
        needs |= {"main.py", "cli/__init__.py", "cli/app.py", "cli/operator.py",
                  "client/jobs_client/__init__.py", "alembic.ini", "migrations/env.py",
                  "common/store/engine.py"}
    if "--source=." in text:
        needs |= {"main.py", "requirements.txt", "functions/submit.py", "common/settings.py"}
    return needs


def test_item03_nothing_a_build_step_uses_is_left_out_by_gcloudignore(
    build: dict[str, Any],
) -> None:
    ignore = GcloudIgnore((ROOT / ".gcloudignore").read_text())
    for step in build["steps"]:
        for path in sorted(_paths_a_step_needs(step)):
            assert (ROOT / path).exists(), path
            assert not ignore.ignored(path), (
                f"step {step['id']} uses {path}, which .gcloudignore leaves out of the upload")


def test_item03_the_docs_say_where_the_tests_run(build: dict[str, Any]) -> None:
    text = " ".join(str(s.get("args")) for s in build["steps"])
    assert "pytest" not in text and "make test" not in text
    docs = DOCS.read_text()
    assert "CI runs `make test`" in docs and ".ci/run" in docs


# -- 4. the pipeline's account can log and read its staged source ---------------------------------


def test_item04_migrate_account_writes_logs_and_reads_the_staged_source(
    infra: Infra, build: dict[str, Any], commands: list[str],
) -> None:
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert build["serviceAccount"].endswith(
        "/${_NAME}-migrate@${PROJECT_ID}.iam.gserviceaccount.com")
    logs = infra.resource("google_project_iam_member", "migrate_log_writer")
    assert logs["role"] == "roles/logging.logWriter"
    assert logs["member"] == "serviceAccount:${google_service_account.migrate.email}"
    reads = infra.resource("google_storage_bucket_iam_member", "migrate_reads_source")
    assert (reads["bucket"], reads["role"]) == (
        "${var.source_bucket}", "roles/storage.objectViewer")
    # ... and the docs stage the source in that bucket, the one Terraform was given.
    apply = commands[first(commands, r"terraform\b.*\bapply\b")]
    bucket = re.search(r"-var source_bucket=(\S+)", apply)
    assert bucket, apply
    submit = commands[first(commands, r"gcloud builds submit")]
    assert f"--gcs-source-staging-dir=gs://{bucket.group(1)}/" in submit


# -- 5. every function names its build account ----------------------------------------------------


def test_item05_functions_are_built_by_their_own_build_account(
    infra: Infra, build: dict[str, Any],
) -> None:
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    config = one_block(fn["build_config"])
    assert config["service_account"] == "${google_service_account.build.id}"
    account = infra.resource("google_service_account", "build")
    assert account["account_id"] == "${var.name}-build"
    roles = {r["role"] for name, r in infra.resources["google_project_iam_member"].items()
             if r["member"] == "serviceAccount:${google_service_account.build.email}"}
    assert {"roles/logging.logWriter", "roles/storage.objectViewer"} <= roles
    acts = infra.resource("google_service_account_iam_member", "migrate_acts_as_build")
    assert acts["service_account_id"] == "${google_service_account.build.name}"
    # cloudbuild.yaml's redeploys name the same account and repository.
    for step in build["steps"]:
        if step["id"].startswith("deploy-"):
            assert ("--build-service-account=projects/${PROJECT_ID}/serviceAccounts/"
                    "${_NAME}-build@${PROJECT_ID}.iam.gserviceaccount.com") in step["args"]
            assert ("--docker-repository=projects/${PROJECT_ID}/locations/${_REGION}/"
                    "repositories/${_NAME}-functions") in step["args"]


# -- 6. every API the plan needs is enabled -------------------------------------------------------

API_OF = {  # resource type prefix -> the APIs it needs
    "google_project_service": ["serviceusage.googleapis.com"],
    "google_project_iam": ["cloudresourcemanager.googleapis.com"],
    "google_service_account": ["iam.googleapis.com"],
    "google_cloudfunctions2": ["cloudfunctions.googleapis.com", "run.googleapis.com",
                               "cloudbuild.googleapis.com", "artifactregistry.googleapis.com"],
    "google_cloud_run": ["run.googleapis.com"],
    "google_pubsub": ["pubsub.googleapis.com"],
    "google_sql": ["sqladmin.googleapis.com"],
    "google_secret_manager": ["secretmanager.googleapis.com"],
    "google_cloud_scheduler": ["cloudscheduler.googleapis.com"],
    "google_storage": ["storage.googleapis.com"],
    "google_artifact_registry": ["artifactregistry.googleapis.com"],
    "google_cloudbuild": ["cloudbuild.googleapis.com"],
    "google_logging": ["logging.googleapis.com"],
    "google_monitoring": ["monitoring.googleapis.com"],
    "google_billing_budget": ["billingbudgets.googleapis.com"],
    "google_iap": ["iap.googleapis.com"],
    "time_": [],  # hashicorp/time: local to Terraform, no API
    "google_project": ["cloudresourcemanager.googleapis.com"],  # data.google_project
}


def test_item06_every_resource_type_has_its_api_enabled(
    infra: Infra, commands: list[str],
) -> None:
    base = set(infra.locals["apis_base"])
    conditional = {"google_billing_budget": set(infra.locals["apis_budget"]),
                   "google_iap_web_cloud_run_service_iam_member": set(infra.locals["apis_iap"])}
    for rtype in sorted(infra.resource_types() | set(infra.data)):
        prefix = next((p for p in sorted(API_OF, key=len, reverse=True) if rtype.startswith(p)),
                      None)
        assert prefix, f"{rtype}: which API does it need? add it to API_OF and to infra/apis.tf"
        enabled = base | conditional.get(rtype, set())
        assert set(API_OF[prefix]) <= enabled, (rtype, set(API_OF[prefix]) - enabled)
    assert "cloudresourcemanager.googleapis.com" in base
    api = infra.resource("google_project_service", "api")
    assert api["for_each"] == "${toset(local.apis)}" and api["disable_on_destroy"] is False
    # The docs enable the same list with gcloud before Terraform first runs.
    enable = commands[first(commands, r"gcloud services enable")]
    assert first(commands, r"gcloud services enable") < first(commands, r"terraform\b.*\binit\b")
    assert set(re.findall(r"[a-z0-9-]+\.googleapis\.com", enable)) == base


# -- 7. a person and a service can try it ---------------------------------------------------------


def test_item07_a_person_impersonates_an_invoker_with_the_right_audience(
    infra: Infra, commands: list[str],
) -> None:
    invoker = infra.resource("google_cloud_run_service_iam_member", "submit_caller_invoker")
    assert invoker["member"] == "serviceAccount:${google_service_account.caller.email}"
    assert invoker["role"] == "roles/run.invoker"
    creators = infra.resource("google_service_account_iam_member", "caller_impersonators")
    assert creators["role"] == "roles/iam.serviceAccountTokenCreator"
    assert creators["for_each"] == "${toset(var.submit_caller_impersonators)}"
    tokens = [c for c in commands if "print-identity-token" in c]
    assert tokens
    for command in tokens:  # gcloud refuses --audiences for a user account
        assert "--impersonate-service-account=" in command, command
        assert "--include-email" in command and "--audiences=" in command, command
    assert "$(terraform -chdir=infra output -raw caller_service_account)" in " ".join(commands)
    # Services: Google identities call with their own ID token; HS256 callers send the IAM token
    # in X-Serverless-Authorization, or submit is made public.
    docs = DOCS.read_text()
    assert "X-Serverless-Authorization" in docs and "allow_public_submit" in docs
    # The audience the submit function checks is the one the docs mint tokens for.
    assert infra.locals["fn"]["submit"]["env"]["AUTH_GOOGLE_AUDIENCE"] == '${local.url["submit"]}'
    assert infra.outputs["submit_url"]["value"] == '${local.url["submit"]}'


# -- 8. internal-only functions are called on their run.app URL -----------------------------------


def test_item08_internal_only_functions_are_targeted_on_run_app(infra: Infra) -> None:
    run_app = '${google_cloudfunctions2_function.fn["%s"].service_config[0].uri}'
    internal = {f for f, c in infra.locals["fn"].items() if c["ingress"] == "ALLOW_INTERNAL_ONLY"}
    assert internal == {"process", "sweep"}
    job = infra.resource("google_cloud_scheduler_job", "sweep")
    assert one_block(job["http_target"])["uri"] == run_app % "sweep"
    push = one_block(infra.resource("google_pubsub_subscription", "process_push")["push_config"])
    assert push["push_endpoint"] == run_app % "process"
    assert "cloudfunctions.net" not in str(job) + str(push)


# -- 9. the private-IP path is complete -----------------------------------------------------------


def test_item09_private_ip_is_passed_checked_and_its_apis_enabled(
    infra: Infra, commands: list[str],
) -> None:
    assert infra.locals["common_env"]["DB_IP_TYPE"] == '${var.db_private_ip ? "PRIVATE" : "PUBLIC"}'
    assert infra.locals["build_substitutions"]["_DB_IP_TYPE"] == (
        '${var.db_private_ip ? "PRIVATE" : "PUBLIC"}')
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    conditions = [p["condition"] for p in one_block(fn["lifecycle"])["precondition"]]
    assert ('${!var.db_private_ip || (var.vpc_connector != "" && var.db_network != "")}'
            in conditions)
    assert set(infra.locals["apis_private"]) >= {
        "servicenetworking.googleapis.com", "vpcaccess.googleapis.com", "compute.googleapis.com"}
    assert "var.db_private_ip ? local.apis_private" in infra.text()
    docs = DOCS.read_text()
    for needed in ["db_private_ip=true", "vpc_connector=", "--worker-pool=",
                   *infra.locals["apis_private"]]:
        assert needed in docs, needed


# -- 10. empty substitutions fail the build early, by name ----------------------------------------


def _preflight(build: dict[str, Any], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    step = next(s for s in build["steps"] if s["id"] == "preflight")
    script = step["args"][-1]
    for key, value in values.items():  # what Cloud Build does before the step runs
        script = script.replace("${" + key + "}", value)
    script = script.replace("$$", "$")
    bash = shutil.which("bash")
    assert bash
    return subprocess.run([bash, "-c", script], capture_output=True, text=True, timeout=30,
                          check=False)


def test_item10_the_build_fails_first_naming_empty_substitutions(build: dict[str, Any]) -> None:
    steps = build["steps"]
    assert steps[0]["id"] == "preflight" and "waitFor" not in steps[0]
    assert all(s.get("waitFor") for s in steps[1:]), "every later step waits for the preflight"
    defaults = {k: str(v) for k, v in build["substitutions"].items()}
    done = _preflight(build, defaults)  # a trigger with nothing configured
    assert done.returncode == 1
    assert "_INSTANCE" in done.stderr and "_DB_APP_USERS" in done.stderr
    good = dict(defaults, _INSTANCE="p:europe-west1:jobs-db", _DB_APP_USERS="a@p.iam,b@p.iam")
    assert _preflight(build, good).returncode == 0


def test_item10_the_terraform_trigger_passes_every_substitution(
    infra: Infra, build: dict[str, Any],
) -> None:
    trigger = infra.resource("google_cloudbuild_trigger", "deploy")
    assert trigger["substitutions"] == "${local.build_substitutions}"
    assert trigger["filename"] == "cloudbuild.yaml"
    assert trigger["service_account"] == "${google_service_account.migrate.id}"
    assert set(infra.locals["build_substitutions"]) == set(build["substitutions"])


def test_cloudbuild_substitution_syntax(build: dict[str, Any]) -> None:
    """Every ${X} is declared or built in, every declared one is used, shell variables are
    written $$X (Cloud Build would substitute or reject $X)."""
    text = (ROOT / "cloudbuild.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    declared = set(build["substitutions"])
    assert all(re.fullmatch(r"_[A-Z0-9_]+", k) for k in declared)
    unescaped = re.sub(r"\$\$", "", body)
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", unescaped))
    bare = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", unescaped))
    assert used <= declared | BUILTIN_SUBSTITUTIONS, used - declared - BUILTIN_SUBSTITUTIONS
    assert bare <= BUILTIN_SUBSTITUTIONS, f"write shell variables as $$X: {bare}"
    assert declared <= used, f"declared but unused: {declared - used}"


# -- 11. the scheduler does not fail before the first migration -----------------------------------


def test_item11_sweep_answers_cleanly_before_the_first_migration_and_docs_say_so(
    infra: Infra, commands: list[str],
) -> None:
    # The behaviour (200 {"skipped": "schema-missing"}) is sweep's code and is tested with it;
    # here: the deployment relies on it and says so, and the first build follows the apply.
    assert "schema-missing" in (ROOT / "infra" / "scheduler.tf").read_text()
    assert "schema-missing" in DOCS.read_text()
    assert first(commands, r"terraform\b.*\bapply\b") < first(commands, r"gcloud builds submit")


# -- 12. an overlapping sweep reaches the code ----------------------------------------------------


def test_item12_overlapping_sweeps_reach_the_code_and_fit_the_pool(infra: Infra) -> None:
    concurrency = infra.default("concurrency")
    assert infra.default("max_instances")["sweep"] == 1
    assert concurrency["sweep"] >= 2
    per_instance = infra.default("db_pool_size") + infra.default("db_max_overflow")
    assert per_instance >= concurrency["sweep"] + 1
    fn = infra.resource("google_cloudfunctions2_function", "fn")
    service = one_block(fn["service_config"])
    assert service["max_instance_request_concurrency"] == "${var.concurrency[each.key]}"
    conditions = [p["condition"] for p in one_block(fn["lifecycle"])["precondition"]]
    assert "${var.concurrency.sweep >= 2}" in conditions
    assert "${local.per_instance_connections >= var.concurrency.sweep + 1}" in conditions


# -- 14. Terraform's working files stay out of git; no fake lock file -----------------------------


def test_item14_terraform_state_and_cache_are_ignored_and_no_lock_is_faked() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".terraform/" in ignored and "*.tfstate" in ignored
    lock = ROOT / "infra" / ".terraform.lock.hcl"
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(lock)], cwd=ROOT,
                             capture_output=True, check=False).returncode == 0
    if tracked:  # a real one: written by `terraform init`, with hashes for the pinned provider
        text = lock.read_text()
        assert 'provider "registry.terraform.io/hashicorp/google"' in text
        assert re.search(r'"h1:[A-Za-z0-9+/=]{40,}"', text)
    else:  # none could be made offline: ignored, and the docs say how a deployment makes one
        assert ".terraform.lock.hcl" in ignored
        assert re.search(r"terraform (-chdir=\S+ )?providers lock", DOCS.read_text())


# -- fmt ------------------------------------------------------------------------------------------


def test_terraform_fmt_check() -> None:
    terraform = shutil.which("terraform")
    # Never a skip: a missing binary fails with how to get one (`fmt` needs no providers).
    assert terraform is not None, (
        "terraform is not on PATH: install Terraform 1.11+ (a single binary from HashiCorp's "
        "releases, or your OS's package) to check infra/ formatting"
    )
    done = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(ROOT / "infra")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
