"""A new job's body, checked as POST /jobs checks it: shared by single and batch submit, so an
item of a batch is refused for exactly what would refuse it alone, with the same problem."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from common.api.problems import InvalidParam, ProblemError, validation_problem
from common.presets.base import InvalidContent, PermanentError
from common.presets.registry import Registry
from common.settings import Settings
from common.store.models import NewJob


def _invalid(name: str, reason: str) -> ProblemError:
    return ProblemError(422, "validation-error", "Invalid request",
                        invalid=[InvalidParam(name=name, reason=reason)])


class JobInput:
    """Reads a job body (a JSON value) into a NewJob, or raises the problem POST /jobs answers.
    A callback URL's check resolves its name: one instance per request remembers each URL's
    verdict, so a batch of 1,000 jobs with the same callback looks it up once."""

    def __init__(self, registry: Registry, settings: Settings, owner: str) -> None:
        self._registry = registry
        self._settings = settings
        self._owner = owner
        self._callbacks: dict[str, ProblemError | None] = {}

    def read(self, body: Any) -> NewJob:
        if not isinstance(body, dict):
            raise _invalid("body", "must be a JSON object")
        try:
            new = NewJob.model_validate(body)
        except ValidationError as exc:
            raise validation_problem(exc) from None
        handler = self._registry.get(new.preset)
        if handler is not None:  # unknown presets are refused by the store, naming the known ones
            try:
                handler.parse(new.content, new.metadata)
            except PermanentError as exc:
                field = "content" if isinstance(exc, InvalidContent) else "metadata.options"
                raise _invalid(field, str(exc)) from None
            if new.max_attempts is None and handler.default_max_attempts is not None:
                new = new.model_copy(update={"max_attempts": handler.default_max_attempts})
        if new.callback_url is not None:
            if new.callback_url not in self._callbacks:
                self._callbacks[new.callback_url] = self._check_callback(new.callback_url)
            if (refusal := self._callbacks[new.callback_url]) is not None:
                raise refusal
        return new

    def _check_callback(self, url: str) -> ProblemError | None:
        from common.messaging import callbacks  # only for jobs that have one

        try:
            callbacks.check_at_submit(url, allow_loopback=self._settings.webhook_allow_loopback,
                                      owner=self._owner)
        except callbacks.ForbiddenTarget as exc:
            return _invalid("callback_url", str(exc))
        return None
