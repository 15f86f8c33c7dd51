"""The HTTP functions' framework-free request and response, and their JSON and RFC 9457
problem bodies: the adapters in functions/ translate to and from Flask."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from common.api.problems import MEDIA_TYPE, ProblemError


@dataclass
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    read_body: Callable[[int], bytes]  # read at most n bytes of the body
    content_length: int | None = None


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, model: BaseModel | dict[str, Any], **headers: str) -> Response:
    if isinstance(model, BaseModel):
        body = model.model_dump_json(exclude_none=False).encode()
    else:
        body = json.dumps(model).encode()
    return Response(status, body, {"Content-Type": "application/json", **headers})


def problem_response(exc: ProblemError, instance: str) -> Response:
    problem = exc.problem.model_copy(update={"instance": instance})
    body = problem.model_dump_json(exclude_none=True).encode()
    return Response(problem.status, body, {"Content-Type": MEDIA_TYPE, **exc.headers})


def read_body(request: Request, limit: int) -> bytes:
    """At most `limit` bytes of the body, else 413: refused from Content-Length when it says
    so, or after reading one byte past the limit when it does not."""
    too_large = ProblemError(413, "payload-too-large", "Request body too large",
                             f"at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    raw = request.read_body(limit + 1)
    if len(raw) > limit:
        raise too_large
    return raw


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # also: bad UTF-8, too-long integers, deep nesting
        raise ProblemError(400, "malformed-json", "Malformed JSON body") from None
