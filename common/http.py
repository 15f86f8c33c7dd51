"""The HTTP functions' framework-free request and response, and their JSON and RFC 9457
problem bodies: the adapters in functions/ translate to and from Flask."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from common.problems import MEDIA_TYPE, ProblemError


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
