"""The flow limits endpoints of the submit API (issue 27, docs/flow-control.md): `GET /limits`
(the caller's running limit and quotas, its key limits and the deployment's preset limits) and
`GET`, `PUT`, `DELETE /limits/{key}` (one of the caller's key limits).

A key is its owner's alone: another owner's key of the same name is another limit, and reads
as missing (404). `PUT` replaces the whole limit: a field it leaves out is no limit. The body
is checked for its shape here (an object of numbers, nothing else, no nulls) and for its values
by the store (common/store/flow_limits.py), which names the field it refuses; either refusal
writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from common.api.http import Request, Response
from common.api.http import json_response as _json
from common.api.models import Limits, LimitView
from common.api.problems import InvalidParam, ProblemError, validation_problem
from common.logs import log
from common.service import JobService

# A limit's body is three numbers: anything near this size is not one.
MAX_BODY_BYTES = 4096


class LimitSpec(BaseModel):
    """`PUT /limits/{key}`'s body. Its ranges and its rules (something given; a rate whole)
    are the store's (common/store/flow_limits.checked_limit), so they are stated once."""

    model_config = ConfigDict(extra="forbid")

    max_running: int | None = None
    max_starts: int | None = None
    interval_s: float | None = None

    @field_validator("max_running", "max_starts", "interval_s", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        """Given means a number: pydantic would read `"5"` and `true` as numbers, and a null
        would silently mean "no such limit" where the document says a number."""
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        if isinstance(value, bool | str):
            raise ValueError("must be a number")
        return value


class LimitEndpoints:
    """The /limits operations. SubmitApi builds one on the first such request and hands it the
    way it reads a request body (one size limit and one set of problems for the whole API)."""

    def __init__(self, service: JobService, body: Callable[[Request, int], Any]) -> None:
        self.service = service
        self._body = body

    def _limits(self, request: Request, owner: str) -> Response:
        store = self.service.store
        return _json(200, Limits(
            **store.owner_limit(owner),
            keys=[LimitView.of(limit) for limit in store.key_limits(owner)],
            presets=[LimitView.of(limit) for limit in store.preset_limits()],
        ))

    def _get_limit(self, request: Request, owner: str, key: str) -> Response:
        return _json(200, LimitView.of(self.service.store.key_limit(owner, key)))

    def _put_limit(self, request: Request, owner: str, key: str) -> Response:
        body = self._body(request, MAX_BODY_BYTES)
        if not isinstance(body, dict):
            raise ProblemError(422, "validation-error", "Invalid request",
                               invalid=[InvalidParam(name="body", reason="must be a JSON object")])
        try:
            spec = LimitSpec.model_validate(body)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        limit = self.service.store.set_key_limit(owner, key, **spec.model_dump())
        log("INFO", "key limit set", owner=owner, key=limit.name)
        return _json(200, LimitView.of(limit))

    def _delete_limit(self, request: Request, owner: str, key: str) -> Response:
        self.service.store.delete_key_limit(owner, key)
        log("INFO", "key limit deleted", owner=owner, key=key)
        return Response(204, b"", {})
