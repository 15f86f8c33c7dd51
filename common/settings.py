"""One typed settings object, read from environment variables.

A missing or malformed variable must stop an instance at start-up with a message that names
the variable, rather than surface later as a confusing failure inside a request.

The environment is read by `_from_environment` below, not by pydantic-settings: every field is
one variable named like it (any case), and list fields are JSON. That is all we used of
pydantic-settings, whose import (it loads every settings source it has, dotenv, AWS and Azure
included) was about 45 ms of every cold start (bench.cold_start).
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Collection
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator


class SettingsError(RuntimeError):
    """Raised at start-up when the environment does not describe a usable configuration."""


class IpType(StrEnum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    PSC = "PSC"


class LongJobExecutor(StrEnum):
    """Where long jobs' executions start (common/messaging/executions.py)."""

    NONE = ""
    LOCAL = "local"
    CLOUD_RUN = "cloud-run"


PositiveInt = Annotated[int, Field(gt=0)]


class PresetLimit(BaseModel):
    """One preset's limits: running jobs, and starts per interval (both or neither)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running: Annotated[int, Field(ge=1, le=100_000)] | None = None
    max_starts: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    interval_s: Annotated[float, Field(gt=0, le=86_400 * 7)] | None = None

    @model_validator(mode="after")
    def _rate_whole(self) -> PresetLimit:
        if self.max_running is None and self.max_starts is None:
            raise ValueError("give max_running, or max_starts with interval_s")
        if (self.max_starts is None) != (self.interval_s is None):
            raise ValueError("give max_starts and interval_s together")
        return self


class Settings(BaseModel):
    """Every knob of the job store; see the settings table in docs/settings.md."""

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)

    # Where the database is: either a Cloud SQL instance (through the connector) or a URL.
    instance_connection_name: str | None = Field(
        default=None, pattern=r"^[a-z0-9\-.:]+:[a-z0-9\-]+:[a-z0-9\-]+$"
    )
    database_url: str | None = Field(default=None, pattern=r"^postgresql\+pg8000://")
    db_user: str | None = None
    db_password: SecretStr | None = None
    db_name: str | None = None
    db_iam_auth: bool = False
    db_ip_type: IpType = IpType.PUBLIC
    # Only for tests and private API endpoints; production uses Google's default endpoint.
    cloudsql_admin_endpoint: str | None = None

    # Pools stay small: instances x (pool + overflow) must stay under max_connections.
    db_pool_size: PositiveInt = 2
    db_max_overflow: Annotated[int, Field(ge=0)] = 1
    db_pool_timeout_s: PositiveInt = 5
    db_pool_recycle_s: PositiveInt = 1800
    db_pool_pre_ping: bool = True
    # With pre-ping, a pooled connection is pinged only if it sat idle this long: a ping is a
    # round trip, as costly as the statement it guards. 0 pings on every checkout.
    db_ping_idle_s: Annotated[float, Field(ge=0)] = 5.0
    db_statement_timeout_ms: PositiveInt = 15_000
    db_connect_timeout_s: PositiveInt = 10

    # Job limits.
    max_content_bytes: PositiveInt = 1_048_576
    max_metadata_bytes: PositiveInt = 65_536
    default_max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    lease_seconds: PositiveInt = 300
    max_page_size: Annotated[int, Field(ge=1, le=1000)] = 100

    # Schedules (issue 15). A job may be asked for at most this many days ahead (run_at's date
    # as written, or delay_s); an owner may keep this many schedules, each firing at most once
    # per this many seconds. OWNER_MAX_RUNNING caps each owner's PROCESSING jobs, 0 = unlimited
    # (per-owner overrides live in the owner_limits table).
    max_run_ahead_days: Annotated[int, Field(ge=1, le=3650)] = 30
    max_schedules_per_owner: Annotated[int, Field(ge=0, le=100_000)] = 100
    schedule_min_interval_s: Annotated[int, Field(ge=60, le=31_536_000)] = 60
    owner_max_running: Annotated[int, Field(ge=0, le=100_000)] = 0

    # Flow control (issue 27, docs/flow-control.md). Limits per preset, shared by every owner
    # (a model API's quota is the deployment's): {"transcribe": {"max_running": 4,
    # "max_starts": 60, "interval_s": 60}} (JSON in env). Each instance writes them to
    # `flow_limits` on its first claim, so the database holds what every instance enforces.
    # A delivery whose rate slot is at most FLOW_HOLD_S away (and at most FLOW_AHEAD slots
    # ahead) holds it; a farther one parks until a start or the sweep releases it. Keep
    # FLOW_HOLD_S at least the sweep's period, so a release is never late for a slot.
    preset_limits: dict[str, PresetLimit] = {}
    flow_hold_s: Annotated[float, Field(ge=0, le=300)] = 60.0
    flow_ahead: Annotated[int, Field(ge=1, le=100)] = 4

    # Claims and exits of the deliveries one `process` instance holds at once share statements
    # (issue 30, common/worker/coalescer.py). Off: each delivery writes alone, as before.
    worker_batching: bool = True

    # Presets: modules to import for user handlers, each exposing HANDLERS (JSON list in env).
    preset_modules: list[str] = []

    # Callers' tokens (submit). HS256 for services and local development; Google-signed ID
    # tokens (Cloud Run IAM callers, Identity Platform / Firebase users). Either or both.
    auth_hs256_secret: SecretStr | None = None
    # When set, HS256 tokens must carry this `aud` / `iss`; both are required in production.
    auth_hs256_audience: str | None = None
    auth_hs256_issuer: str | None = None
    auth_google_audience: str | None = None
    auth_google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    auth_google_issuers: list[str] = ["https://accounts.google.com", "accounts.google.com"]
    # Who may call with a Google-signed token or through IAP: verified emails
    # (`alice@example.com`) or owners (`google:<sub>`). Empty: any caller that reaches submit
    # (Cloud Run IAM decides). Required in production when SUBMIT_PUBLIC: a public URL would
    # otherwise take any Google-signed ID token from any project.
    auth_google_allowed: list[str] = []
    submit_public: bool = False
    # Identity-Aware Proxy in front of submit: the `x-goog-iap-jwt-assertion` header (ES256,
    # issuer https://cloud.google.com/iap) is verified for this audience, and its person is the
    # owner (the same `google:<sub>` as their own Google ID token). Unset: the header is ignored.
    auth_iap_audience: str | None = None
    auth_iap_certs_url: str = "https://www.gstatic.com/iap/verify/public_key-jwk"

    # Pub/Sub. The emulator is used when PUBSUB_EMULATOR_HOST is set (google-cloud-pubsub reads it).
    google_cloud_project: str = "local-project"
    jobs_topic: str = "jobs"
    publish_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # Terminal states are announced here ({job_id, owner, state}); empty turns it off.
    results_topic: str = "job-results"

    # The worker (process). A handler's time limit is cut to fit inside the push subscription's
    # ack deadline, less a margin for claiming and writing the result: past the deadline Pub/Sub
    # would deliver the message again while the first run is still going.
    ack_deadline_s: Annotated[int, Field(ge=10, le=600)] = 600
    ack_margin_s: Annotated[float, Field(ge=1)] = 15.0
    # How often a running job's lease is extended and its cancel flag read.
    heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Long jobs (issue 29, docs/worker.md): a preset declared `long=True` runs in an execution
    # of its own (a Cloud Run job, or locally a child process) instead of inside the push, for
    # up to its own time limit, at most LONG_JOB_MAX_S (a Cloud Run task's ceiling is 168 h).
    # LONG_JOB_EXECUTOR: "cloud-run" (CLOUD_RUN_JOB in CLOUD_RUN_REGION of the project),
    # "local" (make dev, tests), or "" (none: a long job's start fails, as a delivery failure).
    long_job_max_s: Annotated[float, Field(gt=0, le=168 * 3600)] = 86_400.0
    long_job_executor: LongJobExecutor = LongJobExecutor.NONE
    cloud_run_job: str | None = Field(default=None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    cloud_run_region: str | None = Field(default=None, pattern=r"^[a-z]+-[a-z]+[0-9]+$")
    # Only for tests; production uses Google's endpoint.
    cloud_run_api_endpoint: str = "https://run.googleapis.com"
    # How long `process` waits for the Admin API to start an execution.
    long_job_start_timeout_s: Annotated[float, Field(gt=0, le=120)] = 30.0
    # Backoff after a transient failure: exponential from base to cap, with jitter.
    retry_base_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    retry_cap_s: Annotated[float, Field(ge=0, le=86_400)] = 600.0
    # The sweep (scheduled maintenance). Its callers: Google-signed OIDC tokens for this
    # audience (the function's URL) whose email is listed; dev HS256 tokens only if allowed.
    sweep_audience: str | None = None
    sweep_allowed_invokers: list[str] = []
    sweep_allow_dev_tokens: bool = False
    # A pass stops taking new work after this long; keep it well under the function's timeout.
    sweep_time_budget_s: Annotated[float, Field(gt=0, le=3600)] = 240.0
    sweep_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    # A PENDING job whose message was published this long ago and never claimed is published
    # again (a safety net: Pub/Sub keeps accepted messages). Longer than the ack deadline, and
    # than a backlog takes to drain, or a backlog gets published twice.
    redispatch_after_s: Annotated[int, Field(ge=60)] = 1800
    dead_letter_subscription: str = "jobs-dead-letters"
    # A dead letter for a job that never ran is a delivery failure, not a job failure: the job
    # is dispatched again after a delay growing from base to cap (jittered), and ends FAILED
    # 'Undeliverable' only once it has waited this long since it became due.
    delivery_budget_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 21_600.0
    delivery_retry_base_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    delivery_retry_cap_s: Annotated[float, Field(ge=0, le=86_400)] = 900.0
    # A stranded job (not a backlog): published this long ago into a worker that showed no sign
    # of life (no job running or finishing) for as long after. The sweep publishes it again at
    # once instead of after REDISPATCH_AFTER_S, so recovery after an outage is prompt.
    stall_after_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    retention_days: Annotated[int, Field(ge=0, le=3650)] = 30

    # Waiting for a job's end (GET /jobs/{id}?wait=N): the longest wait a request may ask for
    # (keep it well under submit's request timeout), and the longest pause between two reads.
    wait_max_s: Annotated[float, Field(gt=0, le=30)] = 30.0
    wait_poll_max_s: Annotated[float, Field(gt=0, le=5)] = 1.0

    # Admission at the door (issues 25 and 27): what one owner may take of submit.
    # A waiting request parks one of the instance's request threads; waits may hold at most
    # WAIT_SHARE of them (floor, at least 1), so the rest always serve submits and reads. The
    # thread count is THREADS, the variable functions-framework itself reads (unset: 4 x CPUs,
    # its default, also what 0 means); keep it equal to the instance's request concurrency.
    # Each owner may hold OWNER_MAX_WAITS of an instance's waits at once. Past either: 429.
    threads: Annotated[int, Field(ge=0, le=10_000)] = 0
    wait_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    owner_max_waits: Annotated[int, Field(ge=1, le=10_000)] = 2
    # Per-owner quotas on POST /jobs, 0 = unlimited; `owner_limits` overrides them per owner.
    # Submits per second are counted per instance (a token bucket, burst of one second's
    # worth); PENDING jobs are counted in PostgreSQL, so that quota holds across instances.
    owner_max_submits_per_s: Annotated[int, Field(ge=0, le=100_000)] = 0
    owner_max_pending: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    # How long an instance trusts what it read of an owner's overrides before reading again.
    owner_limits_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # Completion webhooks. Loopback targets (and plain http to them) only where this is on:
    # make dev and tests; production refuses it.
    webhook_allow_loopback: bool = False
    # 32 random bytes, base64: owners' signing secrets are stored encrypted (AES-GCM) under it.
    webhook_secret_key: SecretStr | None = None
    webhook_timeout_s: Annotated[float, Field(gt=0, le=30)] = 10.0
    webhook_max_attempts: Annotated[int, Field(ge=1, le=50)] = 10
    webhook_retry_base_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    webhook_retry_cap_s: Annotated[float, Field(ge=0, le=86_400)] = 3600.0
    # How many of a delivery's attempts `process` makes itself, right after the job ends,
    # before leaving the rest to the sweep.
    webhook_process_tries: Annotated[int, Field(ge=0, le=10)] = 3
    # After a rotation, the previous secret still signs deliveries this long.
    webhook_rotation_grace_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 86_400.0

    # Production or not: PRODUCTION if set, else whether Cloud Run's K_SERVICE is (every Cloud
    # Run service and gen2 function has it). Production refuses laxer configurations.
    production: bool | None = None
    k_service: str | None = None

    # The chaos preset (tests and benchmarks only): never registered unless this is on.
    enable_chaos_preset: bool = False
    # The demo preset (sleeps as long as its content says, with progress; fails on request):
    # make dev turns it on, so that progress, cancel, fair share and long polls can be tried.
    enable_demo_preset: bool = False
    # Fault injection (chaos runs only): this fraction of submit's publishes is dropped as if
    # Pub/Sub had failed, leaving those jobs to the sweep. 0 (off) unless a test sets it.
    publish_fault_rate: Annotated[float, Field(ge=0, le=1)] = 0.0

    @model_validator(mode="after")
    def _database_is_described(self) -> Self:
        if self.instance_connection_name:
            missing = [name for name in ("db_user", "db_name") if not getattr(self, name)]
            if not self.db_iam_auth and self.db_password is None:
                missing.append("db_password")
            if missing:
                names = ", ".join(m.upper() for m in missing)
                raise ValueError(f"INSTANCE_CONNECTION_NAME is set, so {names} must be set too")
        elif not self.database_url:
            raise ValueError(
                "set INSTANCE_CONNECTION_NAME (Cloud SQL) or DATABASE_URL (postgresql+pg8000://...)"
            )
        if self.ack_margin_s >= self.ack_deadline_s:
            raise ValueError("ACK_MARGIN_S must be shorter than ACK_DEADLINE_S")
        if self.heartbeat_s >= self.lease_seconds:
            raise ValueError("HEARTBEAT_S must be shorter than LEASE_SECONDS")
        if self.long_job_executor == "cloud-run" and not (self.cloud_run_job
                                                          and self.cloud_run_region):
            raise ValueError("LONG_JOB_EXECUTOR=cloud-run needs CLOUD_RUN_JOB and "
                             "CLOUD_RUN_REGION")
        if self.is_production and self.webhook_allow_loopback:
            raise ValueError("WEBHOOK_ALLOW_LOOPBACK must not be on in production")
        if self.webhook_secret_key is not None:
            import base64
            import binascii

            try:
                key = base64.b64decode(self.webhook_secret_key.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise ValueError("WEBHOOK_SECRET_KEY must be 32 bytes, base64-encoded")
        if self.is_production and self.webhook_secret_key is None:
            # All three functions need it: submit seals owners' secrets, process and sweep open
            # them to sign deliveries. Without it submit would store new secrets unsealed.
            raise ValueError(
                "in production WEBHOOK_SECRET_KEY is required (32 random bytes, base64; "
                "Terraform passes it from Secret Manager, docs/deploy.md step 3): without it "
                "owners' webhook signing secrets would be stored unsealed"
            )
        if self.is_production and self.submit_public and not self.auth_google_allowed:
            raise ValueError(
                "in production SUBMIT_PUBLIC needs AUTH_GOOGLE_ALLOWED (a JSON list of emails or "
                "google:<sub> owners): a public submit would take any Google-signed ID token "
                "from any project (Terraform: submit_allowed_principals)")
        if self.is_production and self.auth_hs256_secret is not None:
            # Without them, a token minted for any other service that shares the secret (or a
            # leaked dev token) would be accepted here.
            missing = [n for n in ("auth_hs256_audience", "auth_hs256_issuer")
                       if not getattr(self, n)]
            if missing:
                names = " and ".join(m.upper() for m in missing)
                raise ValueError(f"in production AUTH_HS256_SECRET needs {names} too")
        return self

    @property
    def request_threads(self) -> int:
        """The instance's request threads: THREADS, else functions-framework's default."""
        return self.threads or 4 * (os.cpu_count() or 1)

    @property
    def wait_slots(self) -> int:
        """How many requests of this instance may be waiting at once (issue 25)."""
        return max(1, int(self.request_threads * self.wait_share))

    @property
    def is_production(self) -> bool:
        return self.production if self.production is not None else bool(self.k_service)


_JSON_KINDS = (list, dict, set, frozenset, tuple)


def _is_json(annotation: Any) -> bool:
    """Whether a field's variable holds JSON: a container, or a union with one (`list[str] |
    None`), as pydantic-settings decided it."""
    origin = typing.get_origin(annotation)
    if origin in _JSON_KINDS or annotation in _JSON_KINDS:
        return True
    return any(_is_json(arg) for arg in typing.get_args(annotation)) if origin else False


def _from_environment(skip: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """Each field's variable, if set and not in `skip`: names match in any case (as on Cloud
    Run, where they are upper case); a container field's value is JSON
    (`PRESET_MODULES='["my.handlers"]'`). Returns the values and what could not be read."""
    environ = {name.lower(): value for name, value in os.environ.items()}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, field in Settings.model_fields.items():
        raw = environ.get(name)
        if raw is None or name in skip:
            continue
        if not _is_json(field.annotation):
            values[name] = raw
            continue
        try:
            values[name] = json.loads(raw)
        except ValueError:
            problems.append(f'{name.upper()}: not JSON (a list is written like ["a", "b"])')
    return values, problems


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment and explicit overrides (which win), naming every
    bad variable at once."""
    values, problems = _from_environment(skip=overrides.keys())
    try:
        settings = Settings(**{**values, **overrides})
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']}")
    if problems:
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once per instance."""
    return load_settings()
