"""One typed settings object, read from environment variables.

A missing or malformed variable must stop an instance at start-up with a message that names
the variable, rather than surface later as a confusing failure inside a request.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Raised at start-up when the environment does not describe a usable configuration."""


class IpType(StrEnum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    PSC = "PSC"


PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    """Every knob of the job store; see the settings table in README.md."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

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
    db_statement_timeout_ms: PositiveInt = 15_000
    db_connect_timeout_s: PositiveInt = 10

    # Job limits.
    max_content_bytes: PositiveInt = 1_048_576
    max_metadata_bytes: PositiveInt = 65_536
    default_max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    lease_seconds: PositiveInt = 300
    max_page_size: Annotated[int, Field(ge=1, le=1000)] = 100

    # Presets: modules to import for user handlers, each exposing HANDLERS (JSON list in env).
    preset_modules: list[str] = []

    # Callers' tokens (submit). HS256 for services and local development; Google-signed ID
    # tokens (Cloud Run IAM callers, Identity Platform / Firebase users). Either or both.
    auth_hs256_secret: SecretStr | None = None
    auth_hs256_audience: str | None = None
    auth_google_audience: str | None = None
    auth_google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    auth_google_issuers: list[str] = ["https://accounts.google.com", "accounts.google.com"]

    # Pub/Sub. The emulator is used when PUBSUB_EMULATOR_HOST is set (google-cloud-pubsub reads it).
    google_cloud_project: str = "local-project"
    jobs_topic: str = "jobs"
    publish_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

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
        return self


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and explicit overrides), naming every bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once per instance."""
    return load_settings()
