"""The contract between the worker and a preset's handler.

A handler gets the job's content and its validated options, and returns JSON-serialisable
output. It signals failures by kind: `PermanentError` (the job can never succeed: FAILED at
once) or `TransientError` (try again later, with backoff, while attempts remain). Any other
exception, or running past the time limit, counts as transient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError


class PermanentError(Exception):
    """The job cannot succeed, however often it is tried."""


class TransientError(Exception):
    """This attempt failed for a reason that may pass."""


class InvalidContent(PermanentError):
    """The content is not what the preset reads (its `content_pattern`): the API names the
    `content` field rather than the options."""


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProgressReporter(Protocol):
    def __call__(self, fraction: float, note: str | None = None) -> None: ...


def _ignore_progress(fraction: float, note: str | None = None) -> None:
    """Outside a worker (tests, scripts) progress goes nowhere."""


class Spawner(Protocol):
    def __call__(self, preset: str, content: str, *, key: str,
                 metadata: dict[str, Any] | None = None, max_attempts: int | None = None,
                 priority: int | None = None, limit_key: str | None = None) -> str: ...


def _no_spawn(preset: str, content: str, *, key: str, metadata: dict[str, Any] | None = None,
              max_attempts: int | None = None, priority: int | None = None,
              limit_key: str | None = None) -> str:
    raise PermanentError("spawn is only possible inside a worker")


@dataclass(frozen=True)
class JobContext:
    """What a running handler may know and ask. `cancelled()` turns true once the owner
    cancelled the job, its time limit passed, or its lease was lost: from then on nothing the
    handler returns is kept, so long handlers should check it between steps and stop early.

    `progress(fraction, note)` reports how far the handler has got (0..1, clamped; a short note
    for people). Call it as often as you like: it costs no write. The worker keeps the latest
    report in memory and the next heartbeat (or the final write) stores it, so the API shows it
    at most one heartbeat late."""

    job_id: str
    attempt: int
    cancelled: Callable[[], bool] = field(default=lambda: False)
    progress: ProgressReporter = field(default=_ignore_progress)
    # Workflows (issue 28). `parents["render-script"]`: a parent step's outcome (its state,
    # and its `output` when COMPLETED), read from the database on first use, so a step that
    # never looks costs nothing. `spawn(preset, content, key=...)`: a child job, created once
    # per key however often this handler runs (its identity is this job's id and the key),
    # published at once; a step waiting for this one waits for its children too. Returns the
    # child's id.
    parents: Mapping[str, Any] = field(default_factory=dict)
    spawn: Spawner = field(default=_no_spawn)


@dataclass(frozen=True)
class Handler:
    name: str
    run: Callable[[JobContext, str, Any], Any]
    options: type[BaseModel] = NoOptions
    time_limit_s: float = 60.0
    # A long preset (issue 29) runs in an execution of its own, not inside the push, so its
    # time limit is its own (at most LONG_JOB_MAX_S) instead of being cut to the ack deadline.
    long: bool = False
    # None: the DEFAULT_MAX_ATTEMPTS setting. A caller's own max_attempts wins over both.
    default_max_attempts: int | None = None
    max_content_chars: int | None = None
    # A preset that reads its content as data (the demo's number of seconds) states the form
    # here: a regular expression the whole content must match, in the dialect Python and JSON
    # Schema share, so the OpenAPI document carries it as the content's `pattern`.
    content_pattern: str | None = None
    content_description: str | None = None

    def parse(self, content: str, metadata: dict[str, Any]) -> Any:
        """The handler's options from the job's metadata (its `options` key), validated.
        Invalid content or options are a permanent error: retrying cannot fix them."""
        if self.max_content_chars is not None and len(content) > self.max_content_chars:
            raise PermanentError(f"content longer than {self.max_content_chars} characters")
        if self.content_pattern is not None and not re.fullmatch(self.content_pattern, content):
            raise InvalidContent(self.content_description or f"must match {self.content_pattern}")
        try:
            return self.options.model_validate(metadata.get("options", {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise PermanentError(
                f"invalid options for {self.name}: {where}: {first['msg']}"
            ) from None
