"""Who is calling: bearer tokens verified with google-auth (Google-signed ID tokens) and PyJWT
(HS256). No request body ever names an owner: the owner is the token's subject, namespaced by
who vouches for it (`google:<sub>`, `hs256:<sub>`). Without the namespace, anyone holding the
HS256 secret could act as a Google user by minting a token with that user's numeric `sub`.

A token that verified is remembered (by its SHA-256) until it expires, and for at most
`VERIFIED_TTL_S`: a caller sends the same token with every request until it renews it, and
verifying it again each time cost 37 µs (HS256) to 75 µs (a Google RS256 ID token) of every
request's CPU. Google's certificates are kept as long, so a signing key Google withdraws is
honoured for at most twice that (10 minutes) after it goes, against 5 without this memory.
Nothing that failed is remembered.

People sign in to the dashboard as themselves through Identity-Aware Proxy in front of submit
(AUTH_IAP_AUDIENCE): IAP signs each request it lets through with `x-goog-iap-jwt-assertion`, an
ES256 JWT from issuer https://cloud.google.com/iap, verified here with google-auth against IAP's
JWK set. Its subject, `accounts.google.com:<id>`, is the same Google account id as a Google ID
token's `sub`, so a person is one owner, `google:<id>`, from the dashboard and from the CLI.
Service callers keep their bearer tokens. AUTH_GOOGLE_ALLOWED, when set, names who of the
Google-signed callers (ID tokens and IAP) may act at all: emails or `google:<sub>` owners."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.settings import Settings, SettingsError

DEV_ISSUER = "jobs-pipeline-dev"
# Owner namespaces, one per verifier: their owners can never collide.
GOOGLE, HS256 = "google", "hs256"
IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_GOOGLE_ACCOUNT = "accounts.google.com:"
MAX_SUBJECT = 255
CERTS_TTL_S = 300.0
VERIFIED_TTL_S = CERTS_TTL_S
VERIFIED_MAX = 1024


class Unauthenticated(Exception):
    """No usable token. The message is safe to show; it never echoes the token."""


class NotAllowed(Exception):
    """A verified caller that AUTH_GOOGLE_ALLOWED does not name (403)."""


@dataclass(frozen=True)
class Identity:
    subject: str
    issuer: str
    email: str | None = None
    kind: str = HS256  # or GOOGLE

    @property
    def owner(self) -> str:
        """The job owner this caller is: the subject in its verifier's namespace."""
        return owner_id(self.kind, self.subject)


def owner_id(kind: str, subject: str) -> str:
    return f"{kind}:{subject}"


class _CachedCertsRequest:
    """A google-auth transport that keeps fetched certificates for a few minutes: without it,
    google-auth downloads Google's certificates on every verification."""

    def __init__(self, ttl_s: float = CERTS_TTL_S) -> None:
        from google.auth.transport.requests import Request

        self._inner = Request()
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if method != "GET":
            return self._inner(url, method=method, **kwargs)
        with self._lock:
            hit = self._cache.get(url)
            if hit and hit[0] > time.monotonic():
                return hit[1]
        response = self._inner(url, method=method, **kwargs)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (time.monotonic() + self._ttl, response)
        return response


class TokenVerifier:
    """Verifies `Authorization: Bearer` headers with whichever verifiers the settings enable."""

    def __init__(
        self,
        settings: Settings,
        *,
        google_audience: str | None = None,
        accept_hs256: bool = True,
        audience_setting: str = "AUTH_GOOGLE_AUDIENCE",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """By default the settings' audience and HS256 secret (submit). The sweep passes its
        own audience and decides whether dev tokens are accepted at all."""
        self._settings = settings
        self._secret = settings.auth_hs256_secret if accept_hs256 else None
        self._audience = google_audience or (
            settings.auth_google_audience if audience_setting == "AUTH_GOOGLE_AUDIENCE" else None
        )
        if self._secret is None and self._audience is None and not (
                audience_setting == "AUTH_GOOGLE_AUDIENCE" and settings.auth_iap_audience):
            secret = "AUTH_HS256_SECRET" if accept_hs256 else None
            names = " and/or ".join(n for n in (secret, audience_setting) if n)
            raise SettingsError(f"no token verifier configured: set {names}")
        self._google_request: _CachedCertsRequest | None = None
        # The allowlist and IAP are submit's (its audience setting), never the sweep's.
        ours = audience_setting == "AUTH_GOOGLE_AUDIENCE"
        self._allowed = frozenset(settings.auth_google_allowed) if ours else frozenset()
        self._iap_audience = settings.auth_iap_audience if ours else None
        self._clock = clock
        self._verified: dict[bytes, tuple[float, Identity]] = {}
        self._verified_lock = threading.Lock()

    def verify_request(self, headers: Any) -> Identity:
        """The caller of a request: IAP's signed header when IAP is configured and the header
        is there, else the bearer token; then the allowlist. Raises Unauthenticated (401) or
        NotAllowed (403)."""
        assertion = _header(headers, IAP_HEADER) if self._iap_audience else None
        if assertion is not None:
            identity = self._remembered(b"iap:" + assertion.encode("utf-8", "surrogatepass"),
                                        lambda: self._verify_iap(assertion))
        else:
            identity = self.verify(_header(headers, "Authorization"))
        if self._allowed and identity.kind == GOOGLE and not (
                identity.owner in self._allowed or (identity.email or "") in self._allowed):
            raise NotAllowed("this caller is not in the allowlist (AUTH_GOOGLE_ALLOWED)")
        return identity

    def verify(self, authorization: str | None) -> Identity:
        if not authorization:
            raise Unauthenticated("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 8192:
            raise Unauthenticated("malformed Authorization header; expected 'Bearer <token>'")
        return self._remembered(token.encode("utf-8", "surrogatepass"),
                                lambda: self._verify_token(token))

    def _remembered(self, token: bytes,
                    verify: Callable[[], tuple[Identity, float]]) -> Identity:
        key = hashlib.sha256(token).digest()
        now = self._clock()
        with self._verified_lock:
            hit = self._verified.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]
        identity, expires = verify()
        until = min(expires, now + VERIFIED_TTL_S)
        if now < until:
            self._remember(key, until, identity)
        return identity

    def _remember(self, key: bytes, until: float, identity: Identity) -> None:
        """When full, drop the expired and then the oldest down to three quarters, so that
        pruning happens once per quarter of the cap, not on every new token."""
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_MAX:
                now = self._clock()
                kept = [(k, v) for k, v in self._verified.items() if now < v[0]]
                self._verified = dict(kept[-(VERIFIED_MAX * 3 // 4):])  # the newest
            self._verified[key] = (until, identity)

    def _verify_token(self, token: str) -> tuple[Identity, float]:
        """The caller's identity and when its token expires (epoch seconds)."""
        import jwt  # with cryptography, 0.15 s to import: paid on the first request only

        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token") from None
        if alg == "HS256" and self._secret is not None:
            return self._verify_hs256(token)
        if alg == "RS256" and self._audience is not None:
            return self._verify_google(token)
        raise Unauthenticated("token kind not accepted here")

    def _verify_hs256(self, token: str) -> tuple[Identity, float]:
        import jwt

        assert self._secret is not None
        audience = self._settings.auth_hs256_audience
        issuer = self._settings.auth_hs256_issuer
        required = ["exp", "sub"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
        try:
            claims = jwt.decode(
                token,
                self._secret.get_secret_value(),
                algorithms=["HS256"],
                audience=audience,
                issuer=issuer,
                options={"require": required, "verify_aud": audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        identity = Identity(subject=_subject(claims), issuer=str(claims.get("iss", HS256)))
        return identity, _expiry(claims)

    def _verify_iap(self, token: str) -> tuple[Identity, float]:
        """IAP's signed header: ES256 against IAP's JWK set, our audience, IAP's issuer."""
        import jwt
        from google.auth import exceptions as google_exceptions
        from google.oauth2 import id_token

        if len(token) > 8192:
            raise Unauthenticated("malformed IAP assertion")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthenticated("malformed IAP assertion") from None
        if alg != "ES256":
            raise Unauthenticated("IAP assertion not signed with ES256")
        if self._google_request is None:
            self._google_request = _CachedCertsRequest()
        try:
            claims = id_token.verify_token(
                token,
                self._google_request,  # type: ignore[arg-type]
                audience=self._iap_audience,
                certs_url=self._settings.auth_iap_certs_url,
                clock_skew_in_seconds=10,
            )
        except (ValueError, jwt.PyJWTError, google_exceptions.GoogleAuthError) as exc:
            raise Unauthenticated(f"invalid IAP assertion: {type(exc).__name__}") from None
        if claims.get("iss") != IAP_ISSUER:
            raise Unauthenticated("invalid IAP assertion: unexpected issuer")
        sub = _subject(claims)
        if not sub.startswith(IAP_GOOGLE_ACCOUNT) or len(sub) == len(IAP_GOOGLE_ACCOUNT):
            raise Unauthenticated("IAP identity is not a Google account")
        email = claims.get("email")
        identity = Identity(subject=sub[len(IAP_GOOGLE_ACCOUNT):], issuer=IAP_ISSUER,
                            email=str(email) if email else None, kind=GOOGLE)
        return identity, _expiry(claims)

    def _verify_google(self, token: str) -> tuple[Identity, float]:
        from google.auth import exceptions as google_exceptions
        from google.oauth2 import id_token

        if self._google_request is None:
            self._google_request = _CachedCertsRequest()
        try:
            claims = id_token.verify_token(
                token,
                self._google_request,  # type: ignore[arg-type]
                audience=self._audience,
                certs_url=self._settings.auth_google_certs_url,
                clock_skew_in_seconds=10,
            )
        except (ValueError, google_exceptions.GoogleAuthError) as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        if claims.get("iss") not in self._settings.auth_google_issuers:
            raise Unauthenticated("invalid token: unexpected issuer")
        email = claims.get("email")
        verified = claims.get("email_verified") in (True, "true")
        identity = Identity(
            subject=_subject(claims),
            issuer=str(claims["iss"]),
            email=str(email) if email and verified else None,
            kind=GOOGLE,
        )
        return identity, _expiry(claims)


def _header(headers: Any, name: str) -> str | None:
    """A header's value whatever the case of its name (werkzeug's headers or a plain dict)."""
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return None if value is None else str(value)


def _expiry(claims: dict[str, Any] | Any) -> float:
    """The verified token's `exp` in epoch seconds; 0 (so: not remembered) for anything odd,
    such as an integer too large for a float, which the libraries accept as "far future"."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp < 2**53:
        return 0.0
    return float(math.floor(exp))  # as the libraries compare it: whole seconds


def _subject(claims: dict[str, Any] | Any) -> str:
    """The `sub` claim, if it can name an owner: text of 1 to 255 characters that can be
    stored and logged (no NUL, no lone surrogate, no control or separator but the space)."""
    sub = claims.get("sub")
    if (
        not isinstance(sub, str)
        or not 0 < len(sub) <= MAX_SUBJECT
        or not sub.isprintable()  # also refuses NUL and lone surrogates
    ):
        raise Unauthenticated("invalid token: bad subject")
    return sub


def issue_dev_token(
    secret: str,
    subject: str,
    *,
    ttl_s: int = 3600,
    audience: str | None = None,
    issuer: str = DEV_ISSUER,
) -> str:
    """An HS256 token for local development and service-to-service calls. Where the verifier
    requires them (production), pass its AUTH_HS256_AUDIENCE and AUTH_HS256_ISSUER."""
    import jwt

    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iss": issuer, "iat": now, "exp": now + ttl_s}
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
