"""The job message codec and the retry backoff."""

from __future__ import annotations

import base64
import json
import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.messaging.job_message import PoisonMessage, backoff, decode_message, encode_message
from common.store.fragments import INT4_MAX, MAX_TOTAL_ATTEMPTS
from common.store.models import DispatchItem


def test_round_trip_through_base64_as_pubsub_delivers_it() -> None:
    item = DispatchItem(id=uuid.uuid4(), attempts=3)
    data, attributes = encode_message(item)
    assert attributes == {"job_id": str(item.id)}
    assert decode_message(base64.b64encode(data).decode()) == item
    assert decode_message(data) == item


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("%%%not-base64%%%", "base64"),
        (base64.b64encode(b"not json").decode(), "not JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "object"),
        (base64.b64encode(b'{"v": 2, "job_id": "x", "attempts": 0}').decode(), "schema"),
        (base64.b64encode(b'{"v": 1, "attempts": 0}').decode(), "job_id"),
        (base64.b64encode(b'{"v": 1, "job_id": "x", "attempts": true}').decode(), "job_id"),
        (base64.b64encode(b'{"v": 1, "job_id": "nope", "attempts": 0}').decode(), "UUID"),
        (base64.b64encode(b'{"v": 1, "job_id": "nope", "attempts": -1}').decode(), "range"),
        (None, "no data"),
        (12, "no data"),
    ],
)
def test_undecodable_messages_are_poison(data: object, reason: str) -> None:
    with pytest.raises(PoisonMessage) as err:
        decode_message(data)
    assert reason in err.value.reason


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_anything_decodes_or_is_poison_with_a_bounded_excerpt(data: bytes | str) -> None:
    try:
        decode_message(data)
    except PoisonMessage as err:
        assert len(err.excerpt) <= 200


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (7, 600), (30, 600)]:
        delays = {backoff(attempt, rng=rng).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 40  # spread out, not one value


def test_message_never_carries_content() -> None:
    data, _ = encode_message(DispatchItem(id=uuid.uuid4(), attempts=0))
    assert set(json.loads(data)) == {"v", "job_id", "attempts"}


@pytest.mark.parametrize("attempts", [10_000, 10_001, 1_000_000, INT4_MAX])
def test_every_attempt_count_the_database_can_hold_decodes(attempts: int) -> None:
    """Retries raise the attempt limit, so counts only grow: a count the decoder refused would
    make its job's message poison while the sweep republished it forever."""
    item = DispatchItem(id=uuid.uuid4(), attempts=attempts)
    assert decode_message(encode_message(item)[0]) == item


@pytest.mark.parametrize("attempts", [INT4_MAX + 1, 2**63, 10**30])
def test_attempt_counts_past_the_int_column_are_poison(attempts: int) -> None:
    data = json.dumps({"v": 1, "job_id": str(uuid.uuid4()), "attempts": attempts}).encode()
    with pytest.raises(PoisonMessage) as err:
        decode_message(data)
    assert "range" in err.value.reason


@pytest.mark.parametrize("attempt", [1024, 1025, 5000, MAX_TOTAL_ATTEMPTS, INT4_MAX])
def test_backoff_never_overflows_and_stays_capped(attempt: int) -> None:
    delay = backoff(attempt, base_s=10, cap_s=600, rng=random.Random(1)).total_seconds()
    assert 300 <= delay <= 600
