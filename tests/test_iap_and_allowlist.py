"""Issue 26, items 7 and 8, through the real submit function (functions-framework's test client,
real PostgreSQL, real token verification against keys served over local HTTP):

- behind Identity-Aware Proxy, a person is who IAP's signed header says (ES256, issuer
  https://cloud.google.com/iap, our audience), one owner per person, the same owner as their own
  Google ID token; anything else in that header is refused;
- AUTH_GOOGLE_ALLOWED names who of the Google-signed callers may act: before it, a public submit
  took any Google-signed ID token from any project. HS256 service tokens are unaffected;
- production refuses to start public without an allowlist."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from common.settings import SettingsError, load_settings
from tests.submit_fixtures import AUDIENCE, SubmitHarness, reset_instance_state
from tests.support.google_tokens import IapTokenIssuer
from tests.support.paths import ROOT

IAP_AUDIENCE = "/projects/123456/locations/europe-west1/services/jobs-submit"
ALICE, BOB, CAROL = "111111111111", "222222222222", "333333333333"
ALLOWED = ["alice@example.com", "carol@example.com", "google:svc-123"]
BODY = {"preset": "echo", "content": "hello"}


@pytest.fixture()
def iap() -> Iterator[IapTokenIssuer]:
    issuer = IapTokenIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture()
def gated(submit_env: SubmitHarness, iap: IapTokenIssuer,
          monkeypatch: pytest.MonkeyPatch) -> SubmitHarness:
    """submit with IAP's audience and an allowlist set, as Terraform sets them."""
    from functions_framework import create_app

    monkeypatch.setenv("AUTH_IAP_AUDIENCE", IAP_AUDIENCE)
    monkeypatch.setenv("AUTH_IAP_CERTS_URL", iap.certs_url)
    monkeypatch.setenv("AUTH_GOOGLE_ALLOWED", json.dumps(ALLOWED))
    reset_instance_state()
    submit_env.client = create_app("submit", str(ROOT / "main.py")).test_client()
    return submit_env


def _person(iap: IapTokenIssuer, user_id: str, email: str, **kw: Any) -> dict[str, str]:
    return {"x-goog-iap-jwt-assertion": iap.assertion(
        sub=f"accounts.google.com:{user_id}", aud=IAP_AUDIENCE, email=email, **kw)}


def _post(api: SubmitHarness, headers: dict[str, str]) -> Any:
    return api.client.post("/jobs", data=json.dumps(BODY), content_type="application/json",
                           headers=headers)


def test_each_person_signs_in_as_themselves_through_iap(gated: SubmitHarness,
                                                        iap: IapTokenIssuer) -> None:
    alice = _person(iap, ALICE, "alice@example.com")
    created = _post(gated, alice)
    assert created.status_code == 202, created.get_json()
    job_id = created.get_json()["id"]
    assert gated.client.get(f"/jobs/{job_id}", headers=alice).status_code == 200
    # The same person with her own Google ID token (the CLI) is the same owner.
    own_token = {"Authorization": "Bearer " + gated.google.token(
        sub=ALICE, aud=AUDIENCE, email="alice@example.com")}
    assert gated.client.get(f"/jobs/{job_id}", headers=own_token).status_code == 200
    # Another allowed person is another owner: alice's job is not theirs.
    carol = _person(iap, CAROL, "carol@example.com")
    assert gated.client.get(f"/jobs/{job_id}", headers=carol).status_code == 404
    mine = gated.client.get("/jobs", headers=carol).get_json()
    assert mine["jobs"] == []


def test_a_person_iap_let_through_but_the_allowlist_does_not_name_gets_403(
    gated: SubmitHarness, iap: IapTokenIssuer,
) -> None:
    bob = _person(iap, BOB, "bob@example.com")
    refused = _post(gated, bob)
    assert refused.status_code == 403
    assert refused.content_type == "application/problem+json"
    assert refused.get_json()["type"].endswith("/forbidden")
    assert gated.client.get("/jobs", headers=bob).status_code == 403


def test_a_forged_or_foreign_iap_header_is_401(gated: SubmitHarness,
                                               iap: IapTokenIssuer) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    sub = f"accounts.google.com:{ALICE}"
    bad = {
        "signed by another key": iap.assertion(sub=sub, aud=IAP_AUDIENCE, key=stranger),
        "another backend's audience": iap.assertion(sub=sub, aud="/projects/9/other"),
        "another issuer": iap.assertion(sub=sub, aud=IAP_AUDIENCE,
                                        iss="https://accounts.google.com"),
        "expired": iap.assertion(sub=sub, aud=IAP_AUDIENCE, ttl_s=-120),
        "HS256 with a guessed secret": iap.assertion(sub=sub, aud=IAP_AUDIENCE,
                                                     key="x" * 40, alg="HS256"),
        "not a Google account": iap.assertion(sub="securetoken.google.com/p:u1",
                                              aud=IAP_AUDIENCE),
        "not a JWT": "not-a-token",
        "unsigned": base64.urlsafe_b64encode(b'{"alg":"none"}').decode() + ".e30.",
    }
    for why, assertion in bad.items():
        got = _post(gated, {"x-goog-iap-jwt-assertion": assertion})
        assert got.status_code == 401, (why, got.get_json())
        assert got.content_type == "application/problem+json", why
        assert assertion not in got.get_data(as_text=True), why


def test_the_allowlist_admits_only_named_google_callers(gated: SubmitHarness) -> None:
    """Before it, any Google-signed ID token for submit's audience was an owner: a service
    account of any project could create jobs, schedules and webhooks."""
    named = {"Authorization": "Bearer " + gated.google.token(sub="svc-123", aud=AUDIENCE)}
    assert _post(gated, named).status_code == 202
    foreign = {"Authorization": "Bearer " + gated.google.token(
        sub="999", aud=AUDIENCE, email="anyone@other-project.iam.gserviceaccount.com")}
    refused = _post(gated, foreign)
    assert refused.status_code == 403, refused.get_json()
    # Service callers with our own HS256 tokens keep working.
    assert _post(gated, gated.auth("billing-service")).status_code == 202


def test_without_iap_configured_the_header_is_ignored(api: SubmitHarness,
                                                      iap: IapTokenIssuer) -> None:
    """Anyone can send the header to a submit that is not behind IAP: it must not count."""
    header = _person(iap, ALICE, "alice@example.com")
    assert _post(api, header).status_code == 401


def test_production_refuses_a_public_submit_without_an_allowlist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AUTH_HS256_SECRET", "AUTH_GOOGLE_ALLOWED", "INSTANCE_CONNECTION_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u@h/db")
    monkeypatch.setenv("WEBHOOK_SECRET_KEY", base64.b64encode(b"k" * 32).decode())
    monkeypatch.setenv("K_SERVICE", "jobs-submit")
    monkeypatch.setenv("SUBMIT_PUBLIC", "true")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "SUBMIT_PUBLIC needs AUTH_GOOGLE_ALLOWED" in str(err.value)
    monkeypatch.setenv("AUTH_GOOGLE_ALLOWED", json.dumps(["alice@example.com"]))
    assert load_settings().auth_google_allowed == ["alice@example.com"]
    monkeypatch.setenv("SUBMIT_PUBLIC", "false")
    monkeypatch.delenv("AUTH_GOOGLE_ALLOWED")
    assert load_settings().is_production  # private: Cloud Run IAM decides who calls


def test_terraform_passes_the_allowlist_and_iap_and_refuses_public_without_one() -> None:
    from tests.support.terraform import Infra, one_block

    infra = Infra()
    env = infra.locals["fn"]["submit"]["env"]
    assert env["SUBMIT_PUBLIC"] == "${tostring(var.allow_public_submit)}"
    assert env["AUTH_GOOGLE_ALLOWED"] == "${jsonencode(var.submit_allowed_principals)}"
    assert env["AUTH_IAP_AUDIENCE"] == '${var.dashboard_iap ? local.iap_audience : ""}'
    assert infra.locals["iap_audience"].endswith("/services/${var.name}-submit")
    lifecycle = one_block(infra.resource("google_cloudfunctions2_function", "fn")["lifecycle"])
    conditions = [p["condition"] for p in lifecycle["precondition"]]
    assert ("${!var.allow_public_submit || length(var.submit_allowed_principals) > 0}"
            in conditions)
    agent = infra.resource("google_cloud_run_service_iam_member", "submit_iap_invoker")
    assert "gcp-sa-iap.iam.gserviceaccount.com" in agent["member"]


def test_the_openapi_document_names_the_iap_header_only_behind_iap(
    gated: SubmitHarness,
) -> None:
    doc = gated.client.get("/openapi.json").get_json()
    iap_scheme = doc["components"]["securitySchemes"]["iap"]
    assert (iap_scheme["in"], iap_scheme["name"]) == ("header", "x-goog-iap-jwt-assertion")
    assert doc["paths"]["/jobs"]["post"]["security"] == [{"bearer": []}, {"iap": []}]
    assert "403" in doc["paths"]["/jobs"]["post"]["responses"]


def test_without_iap_the_openapi_document_has_bearer_tokens_only(api: SubmitHarness) -> None:
    doc = api.client.get("/openapi.json").get_json()
    assert "iap" not in doc["components"]["securitySchemes"]
    assert doc["paths"]["/jobs"]["post"]["security"] == [{"bearer": []}]
