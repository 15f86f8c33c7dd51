"""Bad input gets a typed error and changes nothing; odd but valid input round-trips verbatim."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from common.store.errors import IdempotencyConflict, InvalidInput, UnknownPreset
from common.store.job_store import JobStore
from common.store.models import parse_new_job
from tests.conftest import table_counts


def as_json_value(value: object) -> object:
    """`value` as JSON means it: jsonb keeps a number's value, not its spelling or Python type
    (the float 6.676163794855611e+16 comes back as the integer 66761637948556110, the same
    decimal number), so numbers are compared as decimals."""
    return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "preset": st.sampled_from(["echo", "chaos", "ECHO", "nope", "", "a" * 70, "echo;drop"])
        | st.text(max_size=10),
        "content": st.text(max_size=200) | st.integers() | st.none(),
        "metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=5) | json_values,
        "max_attempts": st.integers(min_value=-5, max_value=200) | st.text(max_size=3),
        "idempotency_key": st.text(max_size=300) | st.none(),
        "owner_id": st.text(max_size=5),
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=payloads)
def test_generated_requests_either_round_trip_or_fail_typed(
    store: JobStore, engine: Engine, payload: dict[str, object]
) -> None:
    before = table_counts(engine)
    try:
        new = parse_new_job(payload)
        job, created = store.create("fuzz", new)
    except (InvalidInput, IdempotencyConflict):  # examples share one table: keys can repeat
        assert table_counts(engine) == before  # a refusal writes nothing, not even half a row
        return
    stored = store.get("fuzz", job.id)
    assert (stored.preset, stored.content, as_json_value(stored.metadata)) == (
        new.preset,
        new.content,
        as_json_value(new.metadata),
    )
    if created:
        assert table_counts(engine)[:2] == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"preset": "echo", "content": "a\x00b"}, "content"),
        ({"preset": "echo", "content": "x", "metadata": {"k": "\x00"}}, "metadata"),
        ({"preset": "echo", "content": "x", "metadata": {"k": float("nan")}}, "metadata"),
        ({"preset": "echo", "content": "x", "metadata": {"k": float("inf")}}, "metadata"),
        ({"preset": "Echo!", "content": "x"}, "preset"),
        ({"preset": "echo", "content": "x", "max_attempts": 0}, "max_attempts"),
        ({"preset": "echo", "content": "x", "owner_id": "someone"}, "owner_id"),
        ({"preset": "echo"}, "content"),
        ({"preset": "echo", "content": "x", "idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_malformed_requests_name_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_new_job(payload)
    assert err.value.field.split(".")[0] == field


def test_deep_nesting_is_refused() -> None:
    deep: object = "leaf"
    for _ in range(40):
        deep = {"k": deep}
    with pytest.raises(InvalidInput) as err:
        parse_new_job({"preset": "echo", "content": "x", "metadata": {"d": deep}})
    assert err.value.field == "metadata"


def test_unknown_preset_names_the_known_ones(store: JobStore, engine: Engine) -> None:
    with pytest.raises(UnknownPreset) as err:
        store.create("alice", parse_new_job({"preset": "resize", "content": "x"}))
    assert err.value.known == ["chaos", "echo", "text-stats"]
    assert "echo" in str(err.value)
    assert table_counts(engine) == (0, 0, 0)


def test_oversized_content_and_metadata_are_refused(store: JobStore, engine: Engine) -> None:
    with pytest.raises(InvalidInput) as err:
        store.create("alice", parse_new_job({"preset": "echo", "content": "é" * 5001}))
    assert err.value.field == "content"  # the limit is in UTF-8 bytes: 10,002 > 10,000
    big = {"blob": "x" * 70_000}
    with pytest.raises(InvalidInput) as err:
        store.create("alice", parse_new_job({"preset": "echo", "content": "x", "metadata": big}))
    assert err.value.field == "metadata"
    assert table_counts(engine) == (0, 0, 0)


@pytest.mark.parametrize("owner", ["", "x" * 321, "a\x00b", "a\ud800b"])
def test_bad_owner_ids_are_refused(store: JobStore, engine: Engine, owner: str) -> None:
    with pytest.raises(InvalidInput):
        store.create(owner, parse_new_job({"preset": "echo", "content": "x"}))
    assert table_counts(engine) == (0, 0, 0)


@pytest.mark.parametrize(
    ("field", "payload"),
    [
        ("content", {"content": "a\ud800b"}),
        ("idempotency_key", {"idempotency_key": "k\udfff"}),
        ("metadata", {"metadata": {"k\ud800": 1}}),
        ("metadata", {"metadata": {"k": {"deep": ["\udc00"]}}}),
    ],
)
def test_lone_surrogates_are_refused_typed_naming_the_field(
    store: JobStore, engine: Engine, field: str, payload: dict[str, object]
) -> None:
    """PostgreSQL stores UTF-8, which has no lone surrogates: refused before any write. (The
    library entry point builds NewJob directly, so the store checks, not only the API.)"""
    from common.store.models import NewJob

    new = NewJob.model_construct(**{"preset": "echo", "content": "x", "metadata": {},
                                    "max_attempts": None, "idempotency_key": None, **payload})
    with pytest.raises(InvalidInput) as err:
        store.create("alice", new)
    assert err.value.field == field and "surrogate" in err.value.message
    assert table_counts(engine) == (0, 0, 0)


def test_sql_metacharacters_are_stored_verbatim(store: JobStore) -> None:
    nasty = "'; DROP TABLE jobs; -- \\x00 $$ %s %(x)s :id \u202e \U0001d54f"
    job, _ = store.create(
        nasty, parse_new_job({"preset": "echo", "content": nasty, "metadata": {nasty: nasty}})
    )
    got = store.get(nasty, job.id)
    assert (got.owner_id, got.content, got.metadata) == (nasty, nasty, {nasty: nasty})


def test_huge_numbers_survive_in_metadata(store: JobStore) -> None:
    meta = {"big": 10**60, "neg": -(10**30), "tiny": 1e-300}
    job, _ = store.create(
        "alice", parse_new_job({"preset": "echo", "content": "x", "metadata": meta})
    )
    assert store.get("alice", job.id).metadata == meta


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(payloads, min_size=1, max_size=8))
def test_a_generated_batch_creates_exactly_what_it_says_and_stores_it_verbatim(
    store: JobStore, engine: Engine, batch: list[dict[str, object]]
) -> None:
    """Batch create: each item's outcome is its job or a typed refusal, and the table grows by
    exactly the jobs it says were created (a refused item writes nothing)."""
    news, seen = [], set()
    for payload in batch:
        try:
            new = parse_new_job(payload)
        except InvalidInput:
            continue
        if new.idempotency_key is not None and new.idempotency_key in seen:
            continue  # the API refuses a batch with duplicate keys before the store
        seen.add(new.idempotency_key)
        news.append(new)
    before = table_counts(engine)
    outcomes = store.create_many("fuzz", news)
    assert len(outcomes) == len(news)
    created = 0
    for new, outcome in zip(news, outcomes, strict=True):
        if outcome.error is not None:
            assert isinstance(outcome.error, InvalidInput | IdempotencyConflict)
            assert outcome.job is None
            continue
        assert outcome.job is not None
        created += outcome.created
        stored = store.get("fuzz", outcome.job.id)
        assert (stored.preset, stored.content, as_json_value(stored.metadata)) == (
            new.preset, new.content, as_json_value(new.metadata))
    assert table_counts(engine)[0] == before[0] + created
