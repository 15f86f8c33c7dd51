"""Between Flask (what functions-framework hands an HTTP function) and common.api.http."""

from __future__ import annotations

import functools

import flask

from common.api.http import Request, Response
from functions.body import read_at_most


def from_flask(request: flask.Request) -> Request:
    return Request(
        method=request.method,
        path=request.path,
        headers=request.headers,
        query=request.args,
        read_body=functools.partial(read_at_most, request),
        content_length=request.content_length,
    )


def to_flask(response: Response) -> flask.Response:
    return flask.Response(response.body, status=response.status, headers=response.headers)


def unrouted(error: Exception) -> flask.Response:
    """Flask's own 404, for a path its catch-all route cannot match (the path converter stops
    at a newline, so `/jobs/a%0Ab` never reaches our handler): a problem, like every other
    error this API answers, instead of Flask's HTML page."""
    import json

    body = {"type": "https://jobs-pipeline.dev/problems/not-found", "title": "No such route",
            "status": 404}
    return flask.Response(json.dumps(body), status=404,
                          content_type="application/problem+json")
