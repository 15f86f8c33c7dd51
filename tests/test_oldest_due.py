"""Issue 26, item 3 (and #31): "oldest PENDING" counts only due jobs. A job for later (`run_at`,
`delay_s`) and a parked one (over its owner's limit) wait by design; counting them kept the
alert open for as long as the job was scheduled ahead. The figure comes from two queries, the
sweep's report (its metric, its alert, the Cloud Monitoring dashboard) and the owner's
`GET /stats` (the CLI's `stats` and the web dashboard): both are checked on a real PostgreSQL,
with due and parked counts beside the figure. Ages are set in the database, never waited for."""

from __future__ import annotations

from typing import Any

from jobs_client import Stats
from sqlalchemy import Engine, text

from cli.render import stats_summary
from common.store.job_store import JobStore
from tests.jobs_helpers import new_job


def _age(engine: Engine, job_id: Any, seconds: int) -> None:
    """The job was created `seconds` ago (and its not_before, if any, moved the same way)."""
    with engine.connect() as conn:
        conn.execute(text(
            "UPDATE jobs SET created_at = created_at - make_interval(secs => :s), "
            "not_before = not_before - make_interval(secs => :s) WHERE id = :id"),
            {"s": seconds, "id": job_id})
        conn.commit()


def _queue(store: JobStore) -> dict[str, Any]:
    return store.queue_report()


def test_run_later_and_parked_jobs_are_not_the_oldest_due(store: JobStore,
                                                         engine: Engine) -> None:
    # A job for an hour ahead, submitted a day ago: not due, whatever its age.
    later, _ = store.create("alice", new_job(delay_s=3600))
    with engine.connect() as conn:
        conn.execute(text("UPDATE jobs SET created_at = now() - interval '1 day', "
                          "not_before = now() + interval '1 hour' WHERE id = :id"),
                     {"id": later.id})
        conn.commit()
    # A parked job: alice's limit is 1 and one job holds it; the next claim parks its job.
    store.set_owner_limit("alice", 1)
    holder, _ = store.create("alice", new_job())
    assert store.claim(holder.id).reason == "claimed"
    parked, _ = store.create("alice", new_job())
    assert store.claim(parked.id).reason == "deferred"
    _age(engine, parked.id, 7200)
    queue = _queue(store)
    assert queue["depth"]["PENDING"] == 2
    assert (queue["pending_due"], queue["pending_parked"], queue["pending_later"]) == (0, 1, 1)
    assert queue["oldest_pending_age_s"] is None  # nothing is late
    mine = store.owner_stats("alice")
    assert (mine["pending_due"], mine["pending_parked"]) == (0, 1)
    assert mine["oldest_pending_age_s"] is None

    # A due job, five minutes old: it alone is the figure.
    due, _ = store.create("alice", new_job())
    _age(engine, due.id, 300)
    queue = _queue(store)
    assert (queue["pending_due"], queue["pending_parked"], queue["pending_later"]) == (1, 1, 1)
    assert 300 <= queue["oldest_pending_age_s"] < 7200
    mine = store.owner_stats("alice")
    assert mine["pending_due"] == 1 and 300 <= mine["oldest_pending_age_s"] < 7200
    assert store.owner_stats("bob")["oldest_pending_age_s"] is None  # scoped to its owner


def test_a_job_for_later_counts_from_when_it_became_due(store: JobStore, engine: Engine) -> None:
    """Scheduled a week ago for a minute ago: it has waited a minute, not a week."""
    job, _ = store.create("alice", new_job(delay_s=60))
    with engine.connect() as conn:
        conn.execute(text("UPDATE jobs SET created_at = now() - interval '7 days', "
                          "not_before = now() - interval '60 seconds' WHERE id = :id"),
                     {"id": job.id})
        conn.commit()
    queue = _queue(store)
    assert queue["pending_due"] == 1 and queue["pending_later"] == 0
    assert 60 <= queue["oldest_pending_age_s"] < 3600
    assert 60 <= store.owner_stats("alice")["oldest_pending_age_s"] < 3600


def test_the_cli_shows_due_and_parked_beside_the_oldest_due() -> None:
    from cli.render import Paint

    stats = Stats(depth={}, pending_due=3, pending_parked=2, oldest_pending_age_s=75.0,
                  finished_last_5_min=0, throughput_per_min=0.0)
    text_ = stats_summary(stats, Paint(False))
    assert "oldest due: " in text_ and "(3 due, 2 parked)" in text_
