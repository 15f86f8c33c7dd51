"""Run later (issue 15): `run_at` / `delay_s` on POST /jobs, through the real submit function,
PostgreSQL and the Pub/Sub emulator. A job for later is not published at submit; the sweep's
re-dispatch publishes it once due (the claim refuses it before)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from common.messaging.dispatch import Dispatcher
from common.service import JobService
from common.settings import load_settings
from common.store.job_store import JobStore
from tests.submit_fixtures import SubmitHarness

BODY = {"preset": "echo", "content": "later"}


def _service(api: SubmitHarness) -> JobService:
    settings = load_settings(**{k.lower(): v for k, v in api.env.items()
                                if k.lower() in ("database_url", "google_cloud_project",
                                                 "jobs_topic")})
    from common.store.engine import create_engine_from_settings

    return JobService(JobStore(create_engine_from_settings(settings), settings),
                      Dispatcher(settings))


def _make_due(engine: Engine, job_id: str) -> None:
    """The clock moving on, for one job: its not_before is now in the past."""
    with engine.connect() as conn:
        conn.execute(text("UPDATE jobs SET not_before = now() - interval '1 second' "
                          "WHERE id = :id"), {"id": job_id})


def test_a_delayed_job_waits_then_the_sweep_publishes_it(api: SubmitHarness,
                                                        engine: Engine) -> None:
    resp = api.post_job("alice", {**BODY, "delay_s": 600})
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["state"] == "PENDING" and job["not_before"] is not None
    assert api.pull() == []  # not published at submit
    service = _service(api)
    assert service.dispatch_due(100) == 0  # not due yet: the sweep leaves it
    claim = service.store.claim(job["id"])
    assert claim.reason == "not-due" and claim.job is None
    got = api.client.get(f"/jobs/{job['id']}", headers=api.auth("alice")).get_json()
    assert got["not_before"] == job["not_before"]
    _make_due(engine, job["id"])
    assert service.dispatch_due(100) == 1
    assert [m["data"]["job_id"] for m in api.pull()] == [job["id"]]


def test_run_at_in_the_future_sets_not_before_and_in_the_past_means_now(
    api: SubmitHarness,
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    local = soon.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata")).isoformat()
    later = api.post_job("alice", {**BODY, "run_at": local}).get_json()
    assert datetime.fromisoformat(later["not_before"]) == soon
    past = api.post_job("alice", {**BODY, "run_at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 202 and past.get_json()["not_before"] is None
    assert [m["data"]["job_id"] for m in api.pull()] == [past.get_json()["id"]]


def test_a_scheduled_job_can_be_cancelled(api: SubmitHarness) -> None:
    job = api.post_job("alice", {**BODY, "delay_s": 3600}).get_json()
    resp = api.client.post(f"/jobs/{job['id']}/cancel", headers=api.auth("alice"))
    assert resp.status_code == 200 and resp.get_json()["state"] == "CANCELLED"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"run_at": "2026-12-01T09:00:00"}, "run_at"),  # naive: no offset
        ({"run_at": "2026-12-01 09:00:00Z"}, "run_at"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"run_at": "2026-12-01T09:00:00Z\n"}, "run_at"),
        ({"run_at": "2026-02-30T09:00:00Z"}, "run_at"),
        ({"run_at": "2026-12-01T09:00:60Z"}, "run_at"),
        ({"run_at": "9999-12-31T23:59:59-23:59"}, "run_at"),  # too far, and past datetime.max
        ({"run_at": "\ud800"}, "run_at"),
        ({"run_at": "\uff12\uff10\uff12\uff16-12-01T09:00:00Z"}, "run_at"),  # full-width digits
        ({"run_at": None}, "run_at"),
        ({"run_at": 1_800_000_000}, "run_at"),
        ({"delay_s": -1}, "delay_s"),
        ({"delay_s": "60"}, "delay_s"),
        ({"delay_s": True}, "delay_s"),
        ({"delay_s": 1.5}, "delay_s"),
        ({"delay_s": 31 * 86_400}, "delay_s"),
        ({"delay_s": 10**30}, "delay_s"),
        ({"delay_s": None}, "delay_s"),
        ({"delay_s": 5, "run_at": "2026-12-01T09:00:00Z"}, "body"),
    ],
)
def test_bad_times_are_422_naming_the_field_and_create_nothing(
    api: SubmitHarness, engine: Engine, extra: dict[str, Any], field: str
) -> None:
    resp = api.post_job("alice", {**BODY, **extra})
    problem = resp.get_json()
    assert resp.status_code == 422, problem
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert [p["name"] for p in problem["invalid_params"]] == [field], problem
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0


def test_too_far_ahead_names_the_last_allowed_date(api: SubmitHarness) -> None:
    far = (datetime.now(UTC) + timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    problem = api.post_job("alice", {**BODY, "run_at": far}).get_json()
    last = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert problem["status"] == 422 and last in problem["invalid_params"][0]["reason"]
