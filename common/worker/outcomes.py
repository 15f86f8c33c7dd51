"""What the worker was given (a Pub/Sub message) and what it made of it: shared by the push
path (common/worker/runner.py) and the long-job hand-off (common/worker/long_jobs.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID


@dataclass(frozen=True)
class Delivery:
    """One Pub/Sub message as the trigger gave it: `data` is base64 text (or bytes)."""

    data: Any
    message_id: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


Action = Literal[
    "poison", "skipped", "deferred", "completed", "failed", "retry-scheduled", "cancelled",
    "fenced", "lease-lost", "handed-off", "start-failed",
]


@dataclass(frozen=True)
class WorkOutcome:
    action: Action
    job_id: UUID | None = None
    detail: str = ""
