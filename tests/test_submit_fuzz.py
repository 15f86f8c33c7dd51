"""Generated requests against every operation of the OpenAPI document (jobs, run-later fields,
schedules): never a 5xx, every error a problem+json, and never a partial row (a job without its
events, a result without a terminal state, a schedule the store would not have accepted)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.submit_fixtures import SubmitHarness

EXAMPLES = 2000

nasty_text = st.sampled_from(
    ["", "\x00", "' OR 1=1 --", "🙂" * 50, "\u202e", "a" * 300, "%s%s", "{{x}}", "\ud7ff", "NaN"]
) | st.text(max_size=40)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
    max_leaves=12,
)
job_body = st.fixed_dictionaries(
    {"preset": st.sampled_from(["echo", "text-stats", "nope", "ECHO"]) | nasty_text},
    optional={
        "content": nasty_text | json_value,
        "metadata": json_value,
        "max_attempts": st.integers(min_value=-3, max_value=150) | nasty_text,
        "idempotency_key": nasty_text,
        "owner_id": nasty_text,
        "run_at": st.sampled_from(["2001-01-01T00:00:00Z", "2026-12-01T09:00:00+01:00",
                                   "2026-12-01T09:00:00", "9999-12-31T23:59:59-23:59"])
        | nasty_text | json_value,
        "delay_s": st.integers(min_value=-5, max_value=10**9) | nasty_text | json_value,
    },
)
valid_job = st.fixed_dictionaries(
    {"preset": st.sampled_from(["echo", "text-stats"]), "content": nasty_text},
    optional={
        "metadata": st.dictionaries(nasty_text, json_value, max_size=3),
        "max_attempts": st.integers(min_value=1, max_value=100),
        "idempotency_key": st.integers(0, 30).map(lambda n: f"key-{n}"),
    },
)
crons = st.sampled_from(["*/5 * * * *", "0 9 * * MON-FRI", "0 0 L * *", "61 * * * *",
                         "5-3 * * * *", "0 0 31 4 *", "@daily", "* * * * *\n"]) | nasty_text
schedule_body = st.fixed_dictionaries(
    {"cron": crons | json_value, "job": valid_job.map(
        lambda b: {k: v for k, v in b.items() if k != "idempotency_key"}) | json_value},
    optional={
        "timezone": st.sampled_from(["UTC", "Europe/Riga", "Mars/Base", "../etc", ""])
        | nasty_text | json_value,
        "enabled": st.booleans() | json_value,
        "overlap": st.sampled_from(["skip", "allow", "SKIP"]) | json_value,
        "catch_up": st.sampled_from(["once", "all", "never"]) | json_value,
        "owner_id": nasty_text,
    },
)
schedule_raw = st.one_of(
    schedule_body.map(lambda b: json.dumps(b).encode()),
    st.dictionaries(st.sampled_from(["cron", "timezone", "enabled", "overlap", "catch_up",
                                     "job"]), json_value, max_size=3)
    .map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=64),
)
raw_bodies = st.one_of(
    valid_job.map(lambda b: json.dumps(b).encode()),
    valid_job.map(lambda b: json.dumps(b).encode()),
    job_body.map(lambda b: json.dumps(b).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.just(b'{"preset": "echo", "content": "' + b"[" * 5000 + b'"}'),
    st.just(b"[" * 3000),
    st.just(b'{"preset":"echo","content":"x","max_attempts":1' + b"0" * 5000 + b"}"),
)
path_ids = st.one_of(
    st.uuids().map(str), nasty_text.map(lambda s: s.replace("/", "").replace("?", "") or "x")
)


def _operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method, path) for path, ops in doc["paths"].items() for method in ops]


@st.composite
def requests(draw: st.DrawFn, operations: list[tuple[str, str]]) -> dict[str, Any]:
    # Creation is where writes happen: weight it, so that most of the run probes the write path.
    everything = st.sampled_from([*operations, ("delete", "/jobs"), ("put", "/x"),
                                  ("put", "/schedules")])
    method, path = draw(st.one_of(st.just(("post", "/jobs")), st.just(("post", "/schedules")),
                                  everything))
    path = path.replace("{job_id}", draw(path_ids)).replace("{schedule_id}", draw(path_ids))
    query = draw(
        st.dictionaries(st.sampled_from(["state", "limit", "cursor", "x"]), nasty_text, max_size=3)
    )
    ctype = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"])
    headers = {"Content-Type": draw(ctype)}
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(
            nasty_text.filter(lambda s: "\n" not in s and "\r" not in s)
        )
    return {
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": (draw(schedule_raw) if path.startswith("/schedules") else draw(raw_bodies))
        if method in ("post", "put", "patch") else None,
        "owner": draw(st.sampled_from(["alice", "mallory"])),
        "authorized": draw(st.integers(0, 9)) > 0,
    }


def _check_no_partial_rows(engine: Engine) -> None:
    with engine.connect() as conn:
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM jobs j WHERE NOT EXISTS "
                "(SELECT 1 FROM job_events e WHERE e.job_id = j.id AND e.reason = 'created')"
            )
        ).scalar_one()
        bad_results = conn.execute(
            text(
                "SELECT count(*) FROM job_results r JOIN jobs j ON j.id = r.job_id "
                "WHERE j.state NOT IN ('COMPLETED', 'FAILED')"
            )
        ).scalar_one()
        # a stored schedule always holds a template the store accepted: a known preset, a
        # valid zone, and a next fire time exactly when enabled (also a CHECK constraint)
        bad_schedules = conn.execute(
            text(
                "SELECT count(*) FROM schedules WHERE preset NOT IN ('echo', 'text-stats') "
                "OR timezone NOT IN ('UTC', 'Europe/Riga') "
                "OR enabled <> (next_fire_at IS NOT NULL)"
            )
        ).scalar_one()
    assert (orphans, bad_results, bad_schedules) == (0, 0, 0)


def test_generated_requests_never_5xx_and_leave_no_partial_rows(
    api: SubmitHarness, engine: Engine
) -> None:
    doc = api.client.get("/openapi.json").get_json()
    operations = _operations(doc)
    seen: dict[int, int] = {}
    # A few real jobs, so that generated ids sometimes hit an existing (own or foreign) job.
    known = [api.post_job("alice", {"preset": "echo", "content": "seed"}).get_json()["id"]]
    known_schedule = api.client.post(
        "/schedules", json={"cron": "0 * * * *", "job": {"preset": "echo", "content": "s"}},
        headers=api.auth("alice")).get_json()["id"]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same 2,000 requests on every run: CI is not a lottery
        suppress_health_check=list(HealthCheck),
    )
    @given(req=requests(operations), use_known=st.booleans())
    def run(req: dict[str, Any], use_known: bool) -> None:
        path = req["path"]
        parts = path.split("/")
        if use_known and len(parts) >= 3 and parts[1] in ("jobs", "schedules"):
            parts[2] = known[0] if parts[1] == "jobs" else known_schedule
            path = "/".join(parts)
        headers = dict(req["headers"])
        if req["authorized"]:
            headers.update(api.auth(req["owner"]))
        resp = api.client.open(
            path,
            method=req["method"].upper(),
            query_string=req["query"],
            data=req["body"],
            headers=headers,
        )
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (req, resp.data[:300])
        if resp.status_code >= 400:
            assert resp.headers["Content-Type"] == "application/problem+json"
            body = json.loads(resp.data)
            assert body["status"] == resp.status_code and body["type"] and body["title"]

    run()
    _check_no_partial_rows(engine)
    assert sum(seen.values()) >= 1000
    assert {200, 201, 202, 204, 401, 404, 409, 422} <= set(seen), seen
    assert seen[202] >= 100  # the write path itself was exercised, not only refusals
    assert seen[201] >= 10  # and the schedules' one
    print("fuzz status counts:", dict(sorted(seen.items())))
