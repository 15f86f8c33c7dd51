"""One trace per job: the log lines of submit, process and the webhook delivery carry the same
`logging.googleapis.com/trace`, so Cloud Logging shows them together."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.logs import traceparent_from_headers
from common.store.states import JobState
from localstack.postgres import free_port
from tests.process_fixtures import Pipeline
from tests.support.polling import wait_until
from tests.support.webhook_receiver import Receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _process_lines_once_delivered(pipeline: Pipeline, job_id: str) -> list[dict[str, Any]]:
    """The receiver answers before `process` records the delivery and logs it, so wait for the
    line (bounded) instead of reading the log the moment the receiver has answered."""
    def delivered() -> bool:
        return any(x["message"] == "webhook delivered" and x.get("job_id") == job_id
                   for x in _lines(pipeline.process.log_text()))

    wait_until(delivered, "process's 'webhook delivered' line", timeout=30)
    return _lines(pipeline.process.log_text())


@pytest.fixture()
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the pipeline starts: both submit and process read it."""
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK", "true")


def test_submit_process_and_webhook_lines_share_the_trace(
    loopback: None, pipeline: Pipeline, capfd: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver(free_port())
    try:
        api = pipeline.api
        resp = api.client.post("/webhook-secret/rotate", headers=api.auth("alice"))
        receiver.secret = resp.get_json()["secret"]
        receiver.start()
        resp = api.post_job(
            "alice", {"preset": "echo", "content": "hi", "callback_url": receiver.url},
            traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01",
        )
        assert resp.status_code == 202, resp.get_json()
        job_id = resp.get_json()["id"]
        pipeline.wait(job_id, JobState.COMPLETED)
        assert receiver.wait_for(200)[0].error is None
    finally:
        receiver.stop()
    trace = f"projects/{pipeline.project}/traces/{TRACE_ID}"
    submit_lines = _lines(capfd.readouterr().out)
    process_lines = _process_lines_once_delivered(pipeline, job_id)
    accepted = [x for x in submit_lines if x["message"] == "job accepted"]
    finished = [x for x in process_lines
                if x["message"] == "job attempt finished" and x.get("job_id") == job_id]
    delivered = [x for x in process_lines
                 if x["message"] == "webhook delivered" and x.get("job_id") == job_id]
    assert accepted and finished and delivered
    for line in (*accepted, *finished, *delivered):
        assert line["logging.googleapis.com/trace"] == trace, line
    # And nothing secret or private in those lines: no body, no signature, no URL path.
    text = json.dumps(delivered)
    assert receiver.secret not in text and "/hooks/jobs" not in text and "signature" not in text


@pytest.mark.parametrize(
    ("headers", "trace_id", "sampled"),
    [
        ({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, TRACE_ID, "01"),
        ({"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"},
         "105445aa7843bc8bf206b12000100000", "01"),
        ({"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1"},
         "105445aa7843bc8bf206b12000100000", "00"),
    ],
)
def test_the_callers_trace_is_continued_with_a_span_of_ours(
    headers: dict[str, str], trace_id: str, sampled: str
) -> None:
    version, got_trace, span, flags = traceparent_from_headers(headers).split("-")
    assert (version, got_trace, flags) == ("00", trace_id, sampled)
    assert span != "00f067aa0ba902b7" and len(span) == 16


@pytest.mark.parametrize("bad", ["", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                                 f"ff-{TRACE_ID}-00f067aa0ba902b7-01", "garbage",
                                 f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01"])
def test_a_missing_or_malformed_trace_starts_a_new_one(bad: str) -> None:
    first = traceparent_from_headers({"traceparent": bad})
    second = traceparent_from_headers({"traceparent": bad})
    assert first.split("-")[1] != second.split("-")[1] and first.endswith("-00")
