"""Verified tokens are remembered until they expire (and for at most VERIFIED_TTL_S); nothing
that failed is remembered; the memory is bounded. Real PyJWT and google-auth verify each token
the first time (the Google one against a locally served certificate)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.api import auth
from common.api.auth import TokenVerifier, Unauthenticated, issue_dev_token
from common.settings import load_settings
from tests.support.google_tokens import GoogleTokenIssuer

SECRET = "a-dev-secret-long-enough-for-hs256-tokens"
AUDIENCE = "https://submit.example"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def google() -> Iterator[GoogleTokenIssuer]:
    issuer = GoogleTokenIssuer()
    yield issuer
    issuer.stop()


def _verifier(google: GoogleTokenIssuer, clock: Clock) -> tuple[TokenVerifier, list[str]]:
    """A verifier, and the list of the tokens it fully verified (each time it did)."""
    settings = load_settings(database_url="postgresql+pg8000://u@h/d", auth_hs256_secret=SECRET,
                             auth_google_audience=AUDIENCE, auth_google_certs_url=google.certs_url)
    verifier = TokenVerifier(settings, clock=clock)
    verified: list[str] = []
    full = verifier._verify_token

    def counting(token: str) -> Any:
        result = full(token)
        verified.append(token)
        return result

    verifier._verify_token = counting  # type: ignore[method-assign]
    return verifier, verified


def test_a_verified_token_is_remembered_until_the_cap(google: GoogleTokenIssuer) -> None:
    clock = Clock()
    verifier, verified = _verifier(google, clock)
    hs = issue_dev_token(SECRET, "alice", ttl_s=3600)
    gtoken = google.token(sub="svc-1", aud=AUDIENCE, ttl_s=3600)
    for _ in range(3):
        assert verifier.verify(f"Bearer {hs}").owner == "hs256:alice"
        assert verifier.verify(f"Bearer {gtoken}").owner == "google:svc-1"
    assert verified == [hs, gtoken]  # once each
    clock.now += auth.VERIFIED_TTL_S  # the cap passed, the token has not: verified again
    verifier.verify(f"Bearer {hs}")
    assert verified == [hs, gtoken, hs]


def test_never_past_the_token_s_own_expiry(google: GoogleTokenIssuer) -> None:
    """Real time: a token that expires in a few seconds is refused once it has, remembered or
    not."""
    verifier, verified = _verifier(google, Clock())
    verifier._clock = time.time
    token = issue_dev_token(SECRET, "alice", ttl_s=4)
    verifier.verify(f"Bearer {token}")
    verifier.verify(f"Bearer {token}")
    assert verified == [token]
    expires = verifier._verified[next(iter(verifier._verified))][0]
    while time.time() < expires + 0.1:
        time.sleep(0.1)
    with pytest.raises(Unauthenticated, match="ExpiredSignatureError"):
        verifier.verify(f"Bearer {token}")


def test_what_fails_is_not_remembered(google: GoogleTokenIssuer) -> None:
    verifier, _ = _verifier(google, Clock())
    wrong = issue_dev_token("another-secret-that-is-long-enough!!", "alice")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.verify(f"Bearer {wrong}")
    assert verifier._verified == {}
    # A token that differs in one character is another token, verified on its own.
    good = issue_dev_token(SECRET, "alice")
    verifier.verify(f"Bearer {good}")
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    with pytest.raises(Unauthenticated):
        verifier.verify(f"Bearer {tampered}")


def test_the_memory_is_bounded(google: GoogleTokenIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full: the expired go first, then the oldest, down to three quarters of the cap."""
    monkeypatch.setattr(auth, "VERIFIED_MAX", 8)
    clock = Clock()
    verifier, verified = _verifier(google, clock)
    short = [issue_dev_token(SECRET, f"brief-{i}", ttl_s=60) for i in range(2)]
    tokens = [issue_dev_token(SECRET, f"user-{i}") for i in range(20)]
    for token in short + tokens[:6]:
        verifier.verify(f"Bearer {token}")
    assert len(verifier._verified) == 8
    clock.now += 120  # the two brief ones have expired
    verifier.verify(f"Bearer {tokens[6]}")
    assert len(verifier._verified) == 7  # only the expired were dropped
    for token in tokens[7:]:
        verifier.verify(f"Bearer {token}")
        assert len(verifier._verified) <= 8
    verifier.verify(f"Bearer {tokens[-1]}")  # the newest is still remembered
    assert verified == short + tokens
