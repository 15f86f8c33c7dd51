"""The sweep's HTTP surface: who may start a pass, what a call may ask for, and the answer.

Only the scheduler's identity may run a pass: a Google-signed OIDC token for SWEEP_AUDIENCE
(the function's URL) whose verified email is in SWEEP_ALLOWED_INVOKERS, or, where
SWEEP_ALLOW_DEV_TOKENS is on (local development), a dev HS256 token whose subject is listed.
No token or a bad one is 401, a good token of anyone else 403; nothing runs for either.
A pass that overlaps another, or runs before the migrations, is a clean no-op answered 200
(`"skipped"` says why), so neither shows as a failed scheduler run.
"""

from __future__ import annotations

from pydantic import ValidationError

from common.api.auth import Identity, TokenVerifier, Unauthenticated
from common.api.http import (
    Request,
    Response,
    json_response,
    parse_json,
    problem_response,
    read_body,
)
from common.api.problems import ProblemError, validation_problem
from common.logs import bind_trace, log, trace_from_headers
from common.maintenance.sweep import Sweeper, SweepRequest
from common.settings import Settings

MAX_BODY = 4096


def make_verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(
        settings,
        google_audience=settings.sweep_audience,
        accept_hs256=settings.sweep_allow_dev_tokens,
        audience_setting="SWEEP_AUDIENCE",
    )


class SweepApi:
    def __init__(self, settings: Settings, sweeper: Sweeper, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.sweeper = sweeper
        self.verifier = verifier
        self.allowed = frozenset(settings.sweep_allowed_invokers)

    def handle(self, request: Request) -> Response:
        bind_trace(trace_from_headers(request.headers, self.settings.google_cloud_project))
        try:
            if request.method != "POST":
                raise ProblemError(405, "method-not-allowed", "Method not allowed",
                                   headers={"Allow": "POST"})
            caller = self._authorize(request)
            sweep_request = self._parse(request)
            log("INFO", "sweep started", caller=caller)
            summary = self.sweeper.run(sweep_request)
            if not summary["ok"]:
                raise ProblemError(503, "sweep-incomplete", "Some sweep steps failed",
                                   headers={"Retry-After": "60"}, summary=summary)
            return json_response(200, summary)
        except ProblemError as exc:
            return problem_response(exc, request.path)

    def _authorize(self, request: Request) -> str:
        try:
            identity = self.verifier.verify(request.headers.get("Authorization"))
        except Unauthenticated as exc:
            log("WARNING", "sweep refused: unauthenticated", reason=str(exc))
            raise ProblemError(401, "unauthenticated", "Authentication required", str(exc),
                               headers={"WWW-Authenticate": 'Bearer realm="sweep"'}) from None
        name = _invoker_name(identity)
        if name is None or name not in self.allowed:
            log("WARNING", "sweep refused: not an allowed invoker", caller=name or identity.subject)
            raise ProblemError(403, "forbidden", "Not an allowed invoker of the sweep")
        return name

    def _parse(self, request: Request) -> SweepRequest:
        raw = read_body(request, MAX_BODY)
        if not raw.strip():
            return SweepRequest()
        body = parse_json(raw)
        try:
            return SweepRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_problem(exc) from None


def _invoker_name(identity: Identity) -> str | None:
    """Google tokens name the invoker by verified email (a service account); dev tokens by
    subject."""
    return identity.email if identity.kind == "google" else identity.subject
