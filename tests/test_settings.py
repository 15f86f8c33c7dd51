"""A missing or bad setting stops start-up with a message that names it."""

from __future__ import annotations

import base64

import pytest

from common.settings import SettingsError, load_settings

CLEAR = [
    "DATABASE_URL",
    "INSTANCE_CONNECTION_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_NAME",
    "DB_IAM_AUTH",
    "DB_POOL_SIZE",
    "MAX_CONTENT_BYTES",
    "WEBHOOK_SECRET_KEY",
    "K_SERVICE",
    "PRODUCTION",
]
# A well-formed WEBHOOK_SECRET_KEY (32 bytes, base64), which production requires.
WEBHOOK_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEAR:
        monkeypatch.delenv(name, raising=False)


def test_nothing_set_names_both_ways_to_reach_the_database() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "INSTANCE_CONNECTION_NAME" in str(err.value) and "DATABASE_URL" in str(err.value)


def test_instance_without_credentials_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INSTANCE_CONNECTION_NAME", "proj:europe-west1:db")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert all(n in str(err.value) for n in ("DB_USER", "DB_NAME", "DB_PASSWORD"))
    monkeypatch.setenv("DB_USER", "svc")
    monkeypatch.setenv("DB_NAME", "jobs")
    monkeypatch.setenv("DB_IAM_AUTH", "true")
    settings = load_settings()  # IAM login needs no password
    assert settings.db_iam_auth and settings.db_password is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "zero"),
        ("DB_POOL_SIZE", "0"),
        ("MAX_CONTENT_BYTES", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("INSTANCE_CONNECTION_NAME", "not a name"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert name in str(err.value)


def test_password_never_shows_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    assert "hunter2" not in repr(load_settings())


@pytest.mark.parametrize("how", [{"K_SERVICE": "submit"}, {"PRODUCTION": "true"}])
def test_production_refuses_an_hs256_secret_without_issuer_and_audience(
    monkeypatch: pytest.MonkeyPatch, how: dict[str, str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("AUTH_HS256_SECRET", "s" * 32)
    monkeypatch.setenv("WEBHOOK_SECRET_KEY", WEBHOOK_KEY)
    for name in ("AUTH_HS256_ISSUER", "AUTH_HS256_AUDIENCE", "K_SERVICE", "PRODUCTION"):
        monkeypatch.delenv(name, raising=False)
    assert not load_settings().is_production  # a laptop: dev tokens without iss/aud are fine
    for name, value in how.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "AUTH_HS256_AUDIENCE" in str(err.value) and "AUTH_HS256_ISSUER" in str(err.value)
    assert "s" * 32 not in str(err.value)
    monkeypatch.setenv("AUTH_HS256_ISSUER", "https://issuer.example")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "AUTH_HS256_AUDIENCE" in str(err.value) and "AUTH_HS256_ISSUER" not in str(err.value)
    monkeypatch.setenv("AUTH_HS256_AUDIENCE", "https://submit.example")
    assert load_settings().is_production
    monkeypatch.setenv("PRODUCTION", "false")  # explicit wins over the detection
    monkeypatch.delenv("AUTH_HS256_AUDIENCE")
    assert not load_settings().is_production


def test_production_without_an_hs256_secret_needs_no_hs256_claims(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("K_SERVICE", "process")
    monkeypatch.setenv("WEBHOOK_SECRET_KEY", WEBHOOK_KEY)
    monkeypatch.delenv("AUTH_HS256_SECRET", raising=False)
    assert load_settings().is_production


@pytest.mark.parametrize("how", [{"K_SERVICE": "jobs-submit"}, {"K_SERVICE": "jobs-process"},
                                 {"K_SERVICE": "jobs-sweep"}, {"PRODUCTION": "true"}])
def test_production_refuses_to_start_without_the_webhook_secret_key(
    monkeypatch: pytest.MonkeyPatch, how: dict[str, str],
) -> None:
    """submit seals owners' webhook secrets with it, process and sweep open them: on Cloud Run,
    without it, submit would store new secrets unsealed."""
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.delenv("AUTH_HS256_SECRET", raising=False)
    assert load_settings().webhook_secret_key is None  # make dev and tests: stored `plain:`
    for name, value in how.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "WEBHOOK_SECRET_KEY is required" in str(err.value)
    assert "unsealed" in str(err.value)
    monkeypatch.setenv("WEBHOOK_SECRET_KEY", WEBHOOK_KEY)
    settings = load_settings()
    assert settings.is_production and settings.webhook_secret_key is not None
    assert WEBHOOK_KEY not in repr(settings)


def test_lists_are_json_and_names_match_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("PRESET_MODULES", '["my.handlers", "more.handlers"]')
    monkeypatch.setenv("sweep_allowed_invokers", '["cron@p.iam.gserviceaccount.com"]')
    monkeypatch.setenv("Db_Pool_Size", "4")
    settings = load_settings()
    assert settings.preset_modules == ["my.handlers", "more.handlers"]
    assert settings.sweep_allowed_invokers == ["cron@p.iam.gserviceaccount.com"]
    assert settings.db_pool_size == 4
    assert load_settings(db_pool_size=7).db_pool_size == 7  # an explicit override wins


@pytest.mark.parametrize("value", ["my.handlers", "[my.handlers]", '{"a": 1}', "[1]"])
def test_a_list_that_is_not_a_json_list_of_strings_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("PRESET_MODULES", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "PRESET_MODULES" in str(err.value)


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("PRESET_MODULES", "my.handlers")
    monkeypatch.setenv("DB_POOL_SIZE", "zero")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "PRESET_MODULES" in str(err.value) and "DB_POOL_SIZE" in str(err.value)
    # An explicit override replaces the variable: its bad value no longer matters.
    assert load_settings(preset_modules=[], db_pool_size=1).preset_modules == []


def test_every_setting_is_read_from_one_variable_of_a_known_kind() -> None:
    """The reader passes a variable's text to scalar fields and decodes JSON for containers
    (`_is_json`); a field of any other kind would need a rule of its own."""
    import typing
    from enum import Enum

    from pydantic import BaseModel, SecretStr

    from common.settings import Settings, _is_json

    scalars = (str, int, float, bool, SecretStr)

    def json_part(arg: object) -> bool:  # a JSON container's item: text, or a model of fields
        return arg is str or (isinstance(arg, type) and issubclass(arg, BaseModel))

    for name, field in Settings.model_fields.items():
        container = typing.get_origin(field.annotation) in (list, dict)
        kinds = [field.annotation] if container else [
            a for a in typing.get_args(field.annotation) if a is not type(None)
        ] or [field.annotation]
        for kind in kinds:
            ok = kind in scalars or (isinstance(kind, type) and issubclass(kind, Enum)) or (
                _is_json(kind) and all(json_part(a) for a in typing.get_args(kind))
            )
            assert ok, f"{name}: {kind!r}"


def test_preset_limits_are_read_as_json_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.settings import SettingsError, load_settings

    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@127.0.0.1/db")
    monkeypatch.setenv("PRESET_LIMITS", '{"echo": {"max_starts": 60, "interval_s": 60}}')
    limit = load_settings().preset_limits["echo"]
    assert (limit.max_running, limit.max_starts, limit.interval_s) == (None, 60, 60.0)
    for bad in ('{"echo": {}}', '{"echo": {"max_starts": 5}}', '{"echo": {"max_running": 0}}',
                '{"echo": {"max_starts": 5, "interval_s": -1}}', '{"echo": {"rate": 5}}'):
        monkeypatch.setenv("PRESET_LIMITS", bad)
        with pytest.raises(SettingsError, match="PRESET_LIMITS"):
            load_settings()


@pytest.mark.parametrize(("threads", "share", "slots"),
                         [("8", "0.5", 4), ("8", "1", 8), ("4", "0.1", 1), ("9", "0.5", 4)])
def test_the_share_for_waits_is_a_floor_of_the_threads_and_at_least_one(
    monkeypatch: pytest.MonkeyPatch, threads: str, share: str, slots: int
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("THREADS", threads)
    monkeypatch.setenv("WAIT_SHARE", share)
    assert load_settings().wait_slots == slots


def test_without_threads_the_share_is_of_functions_frameworks_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.delenv("THREADS", raising=False)
    settings = load_settings()
    assert settings.request_threads == 4 * (os.cpu_count() or 1)
    assert settings.wait_slots == settings.request_threads // 2


@pytest.mark.parametrize(("name", "value"), [("WAIT_SHARE", "0"), ("WAIT_SHARE", "1.5"),
                                             ("OWNER_MAX_WAITS", "0"), ("THREADS", "-1"),
                                             ("OWNER_MAX_SUBMITS_PER_S", "-1"),
                                             ("OWNER_MAX_PENDING", "many")])
def test_bad_door_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert name in str(err.value)
