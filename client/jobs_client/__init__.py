"""jobs_client: a small typed client of the jobs-pipeline HTTP API (`pip install ./client`).

    from jobs_client import JobsClient
    api = JobsClient("https://submit-xyz.a.run.app", token=lambda: id_token())
    job = api.wait(api.submit("text-stats", "Hello there.").id)
"""

from jobs_client.client import JobsClient, TokenSource, parse_retry_after, template
from jobs_client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    InvalidUrl,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unreachable,
    WaitTimeout,
    problem_error,
)
from jobs_client.models import (
    BatchItemResult,
    BatchResult,
    BulkOutcome,
    EventList,
    FlowWait,
    History,
    HistoryBucket,
    JobEvent,
    JobList,
    JobResult,
    JobState,
    JobTemplate,
    JobView,
    Limits,
    LimitView,
    NewJob,
    Problem,
    ProgressView,
    ScheduleEvent,
    ScheduleList,
    ScheduleView,
    Stats,
    WebhookSecret,
    WebhookView,
)

__all__ = [
    "ApiError", "BadRequest", "BatchItemResult", "BatchResult", "BulkOutcome", "ClientError",
    "Conflict", "EventList", "FlowWait", "History", "HistoryBucket", "InvalidUrl", "JobEvent",
    "JobList", "JobResult", "JobState", "JobTemplate", "JobView", "JobsClient", "LimitView",
    "Limits", "NewJob", "NotFound", "Problem", "ProgressView", "RateLimited", "ScheduleEvent",
    "ScheduleList", "ScheduleView", "Stats", "TokenSource", "Unauthorized", "Unavailable",
    "Unreachable", "WaitTimeout", "WebhookSecret", "WebhookView", "parse_retry_after",
    "problem_error", "template",
]
