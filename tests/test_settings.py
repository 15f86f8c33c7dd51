"""A missing or bad setting stops start-up with a message that names it."""

from __future__ import annotations

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
]


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
