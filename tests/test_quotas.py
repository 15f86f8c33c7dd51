"""Quotas per owner at the door (issue 27): submits per second and PENDING jobs. Past either,
429 with Retry-After and a problem naming the quota; nothing is written; other owners are not
touched. Counted with a frozen clock, never timed."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

import functions.submit
from common.api.auth import HS256, owner_id
from common.store.job_store import JobStore
from tests.process_fixtures import Pipeline
from tests.submit_fixtures import SubmitHarness
from tests.support.polling import wait_until

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


def test_a_flooding_owner_is_refused_and_the_other_never(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench.noisy_neighbour's scene, counted on the real stack (a `process` server runs the
    jobs): owner A holds its two waits and floods from 8 threads; every request past A's quotas
    is a 429 naming it, and owner B, submitting and waiting meanwhile, gets none and sees each
    of its jobs end. The bucket's clock is frozen: the counts are exact."""
    monkeypatch.setenv("OWNER_MAX_SUBMITS_PER_S", "5")
    monkeypatch.setenv("OWNER_MAX_WAITS", "2")
    api = pipeline.api
    functions.submit.get_api().submits._clock = lambda: 1000.0
    held = [api.post_job("flood", {**JOB, "delay_s": 600}).get_json()["id"] for _ in range(2)]
    gate = functions.submit.get_api().waits
    holders = [threading.Thread(target=lambda j=j: api.client.get(
        f"/jobs/{j}?wait=30", headers=api.auth("flood"))) for j in held]
    for t in holders:
        t.start()
    wait_until(lambda: gate.held == 2, "A's two waits held")
    seen: dict[str, Counter[str]] = {"flood": Counter(), "calm": Counter()}
    lock = threading.Lock()

    def note(owner: str, what: str, resp: Any) -> Any:
        body = resp.get_json(force=True)
        with lock:
            seen[owner][f"{what} {resp.status_code}"] += 1
            if resp.status_code == 429:
                seen[owner]["429 " + body["quota"]] += 1
        return body

    def flood() -> None:
        for _ in range(5):
            body = note("flood", "submit", api.post_job("flood", JOB))
            if "id" in body:
                note("flood", "wait", api.client.get(f"/jobs/{body['id']}?wait=10",
                                                     headers=api.auth("flood")))

    floods = [threading.Thread(target=flood) for _ in range(8)]
    for t in floods:
        t.start()
    for _ in range(5):
        body = note("calm", "submit", api.post_job("calm", JOB))
        ended = note("calm", "wait", api.client.get(f"/jobs/{body['id']}?wait=30",
                                                    headers=api.auth("calm")))
        assert ended["state"] == "COMPLETED"
    for t in floods:
        t.join(60)
    for job_id in held:
        api.client.post(f"/jobs/{job_id}/cancel", headers=api.auth("flood"))
    for t in holders:
        t.join(30)
    # A had 3 tokens left after its 2 held jobs: 3 submits in, 37 refused; its 3 waits refused.
    assert seen["flood"] == Counter({"submit 202": 3, "submit 429": 37, "wait 429": 3,
                                     "429 max_submits_per_s": 37, "429 owner_max_waits": 3})
    assert seen["calm"] == Counter({"submit 202": 5, "wait 200": 5})


def test_the_pending_count_runs_only_when_it_could_matter(
    api: SubmitHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far below its quota an owner is counted once per second per instance (the clock is
    frozen here, so once); from half its quota on, at every submit, and refused at it."""
    from common.store.callers import SQL_CREATE, SQL_CREATE_QUOTA

    monkeypatch.setenv("OWNER_MAX_PENDING", "8")
    door = functions.submit.get_api()
    door.pending._clock = lambda: 1000.0
    store = door.service.store
    sent: list[str] = []
    real = store._rows

    def counting(sql: str, **params: Any) -> list[dict[str, Any]]:
        sent.append(sql)
        return real(sql, **params)

    monkeypatch.setattr(store, "_rows", counting)
    answers = [api.post_job("alice", JOB).status_code for _ in range(10)]
    assert answers == [202] * 8 + [429] * 2
    kinds = ["count" if s == SQL_CREATE_QUOTA[False] else "plain" if s == SQL_CREATE[False]
             else "other" for s in sent]
    # Counted at the first (saw 0), not at the next three (1, 2, 3 known), then at 4 of 8 on.
    assert [k for k in kinds if k != "other"] == ["count"] + ["plain"] * 3 + ["count"] * 6
    assert _pending(api, "alice") == 8


def test_pending_hints_count_when_stale_or_near() -> None:
    from common.api.admission import PendingHints

    now = [0.0]
    hints = PendingHints(recheck_s=1.0, clock=lambda: now[0])
    assert hints.must_count("a", 100)  # never counted
    hints.counted("a", 10)
    assert not hints.must_count("a", 100)
    for _ in range(40):
        hints.added("a")
    assert hints.must_count("a", 100)  # 50 of 100 known: near enough
    hints.counted("a", 0)
    now[0] = 1.0
    assert hints.must_count("a", 100)  # a second old
    hints.added("b")  # never counted: nothing to add to
    assert hints.must_count("b", 100)
