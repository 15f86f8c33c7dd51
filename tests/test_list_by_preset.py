"""`GET /jobs?preset=`: the dashboard's preset filter, in the store and over HTTP. It combines
with the state filter and the keyset cursor, stays owner-scoped, and refuses what cannot be a
preset name before it reaches the database."""

from __future__ import annotations

import pytest

from common.store.errors import InvalidInput
from common.store.job_store import JobStore
from common.store.states import JobState
from tests.jobs_helpers import job_in_state, new_job
from tests.submit_fixtures import SubmitHarness


def test_preset_filter_pages_through_one_preset(store: JobStore) -> None:
    echoes = [store.create("alice", new_job(preset="echo", content=str(i)))[0] for i in range(5)]
    store.create("alice", new_job(preset="text-stats"))
    store.create("bob", new_job(preset="echo"))
    seen, cursor = [], None
    while True:
        page = store.list_jobs("alice", preset="echo", limit=2, cursor=cursor)
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [j.id for j in reversed(echoes)]


def test_preset_and_state_filters_combine(store: JobStore) -> None:
    job_in_state(store, JobState.COMPLETED)
    pending = job_in_state(store, JobState.PENDING)
    store.create("alice", new_job(preset="text-stats"))
    page = store.list_jobs("alice", state="PENDING", preset=pending.preset)
    assert [j.id for j in page.jobs] == [pending.id]
    assert store.list_jobs("alice", state="PENDING", preset="chaos").jobs == []


@pytest.mark.parametrize("preset", ["Echo", "echo\x00", "x" * 65, "a b", "echo'--", "-x"])
def test_what_cannot_be_a_preset_is_refused(store: JobStore, preset: str) -> None:
    with pytest.raises(InvalidInput) as err:
        store.list_jobs("alice", preset=preset)
    assert err.value.field == "preset"


def test_over_http(api: SubmitHarness) -> None:
    api.post_job("alice", {"preset": "echo", "content": "a"})
    api.post_job("alice", {"preset": "text-stats", "content": "b"})
    api.post_job("bob", {"preset": "echo", "content": "c"})
    listed = api.client.get("/jobs?preset=echo", headers=api.auth("alice")).get_json()["jobs"]
    assert [j["preset"] for j in listed] == ["echo"]
    everything = api.client.get("/jobs?preset=", headers=api.auth("alice")).get_json()["jobs"]
    assert len(everything) == 2
    bad = api.client.get("/jobs?preset=%00", headers=api.auth("alice"))
    assert bad.status_code == 422
    assert bad.get_json()["invalid_params"][0]["name"] == "preset"
