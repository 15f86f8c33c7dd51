"""Quotas per owner at the door (issue 27): submits per second and PENDING jobs. Past either,
429 with Retry-After and a problem naming the quota; nothing is written; other owners are not
touched. Counted with a frozen clock, never timed."""

from __future__ import annotations

from typing import Any

import pytest

import functions.submit
from common.api.auth import HS256, owner_id
from common.store.job_store import JobStore
from tests.submit_fixtures import SubmitHarness

JOB = {"preset": "echo", "content": "hi"}


def _quota_problem(resp: Any, kind: str, quota: str, limit: int) -> int:
    assert resp.status_code == 429, resp.data
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = resp.get_json(force=True)
    assert body["type"].endswith("/" + kind) and body["status"] == 429
    assert body["quota"] == quota and body["limit"] == limit
    retry_after = int(resp.headers["Retry-After"])
    assert retry_after >= 1 and body["retry_after_s"] == retry_after
    return retry_after


def _pending(api: SubmitHarness, owner: str) -> int:
    return int(api.client.get("/stats", headers=api.auth(owner)).get_json()["depth"]["PENDING"])


def test_submits_past_the_rate_are_429_and_another_owner_is_untouched(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWNER_MAX_SUBMITS_PER_S", "3")
    now = [1000.0]
    functions.submit.get_api().submits._clock = lambda: now[0]  # frozen: counts, not timing
    answers = [api.post_job("alice", JOB).status_code for _ in range(5)]
    assert answers == [202, 202, 202, 429, 429]
    refused = api.post_job("alice", JOB)
    assert _quota_problem(refused, "submit-rate-exceeded", "max_submits_per_s", 3) == 1
    assert [api.post_job("bob", JOB).status_code for _ in range(3)] == [202] * 3
    assert _pending(api, "alice") == 3  # nothing written for the refused ones
    now[0] += 1.0  # a second later the bucket holds three again
    assert [api.post_job("alice", JOB).status_code for _ in range(4)] == [202, 202, 202, 429]


def test_pending_past_the_quota_is_429_and_a_replay_is_still_answered(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OWNER_MAX_PENDING", "2")
    first = api.post_job("alice", JOB, **{"Idempotency-Key": "k1"})
    assert first.status_code == 202
    assert api.post_job("alice", JOB).status_code == 202
    refused = api.post_job("alice", JOB)
    assert _quota_problem(refused, "pending-limit-reached", "max_pending", 2) == 5
    keyed = api.post_job("alice", JOB, **{"Idempotency-Key": "k2"})
    _quota_problem(keyed, "pending-limit-reached", "max_pending", 2)
    replay = api.post_job("alice", JOB, **{"Idempotency-Key": "k1"})
    assert replay.status_code == 200 and replay.get_json()["id"] == first.get_json()["id"]
    assert api.post_job("bob", JOB).status_code == 202
    assert _pending(api, "alice") == 2
    api.client.post(f"/jobs/{first.get_json()['id']}/cancel", headers=api.auth("alice"))
    assert api.post_job("alice", JOB, **{"Idempotency-Key": "k2"}).status_code == 202


def test_an_owners_override_wins_over_the_default(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch, store: JobStore
) -> None:
    """`owner_limits` overrides per owner, read again once OWNER_LIMITS_TTL_S has passed."""
    monkeypatch.setenv("OWNER_MAX_PENDING", "1")
    monkeypatch.setenv("OWNER_LIMITS_TTL_S", "0.001")
    store.set_owner_quota(owner_id(HS256, "alice"), "max_pending", 0)  # unlimited for alice
    store.set_owner_quota(owner_id(HS256, "bob"), "max_pending", 2)
    assert [api.post_job("alice", JOB).status_code for _ in range(3)] == [202] * 3
    assert [api.post_job("bob", JOB).status_code for _ in range(3)] == [202, 202, 429]
    assert [api.post_job("carol", JOB).status_code for _ in range(2)] == [202, 429]
    store.set_owner_quota(owner_id(HS256, "carol"), "max_pending", None)  # no row: default
    assert api.post_job("carol", JOB).status_code == 429
