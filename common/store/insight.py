"""What an owner may read about their own queue beyond the jobs themselves: how many of their
jobs ended per minute over the last hour or day (the dashboard's history), and how many may run
at once (the stack's default and their override).

The history is counted by the server from `finished_at`, so a reload or a second tab shows the
same past. Its cost is bounded by what it reads: `ix_jobs_owner_finished` (migration 0017)
holds (owner, finished_at, state) for ended jobs only, so the count is an index-only range scan
over the owner's jobs that ended in the window, never over the rest of the table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from common.store.base import StoreBase
from common.store.fragments import checked_owner, in_list, lit
from common.store.states import TERMINAL_STATES, JobState

Window = Literal["hour", "day"]
# window -> (span in seconds, bucket in seconds): 60 one-minute buckets, 96 quarter hours.
WINDOWS: dict[str, tuple[int, int]] = {"hour": (3600, 60), "day": (86_400, 900)}

SQL_HISTORY = f"""
SELECT floor(extract(epoch FROM finished_at) / :bucket)::bigint AS slot, state, count(*) AS n
FROM jobs
WHERE owner_id = :owner_id AND finished_at IS NOT NULL
  AND finished_at > now() - make_interval(secs => :span)
  AND state IN {in_list(TERMINAL_STATES)}
GROUP BY 1, 2"""
SQL_NOW = "SELECT now() AS now"

SQL_LIMITS = f"""
SELECT (SELECT max_running FROM owner_limits WHERE owner_id = :owner_id) AS override,
       (SELECT max_submits_per_s FROM owner_limits WHERE owner_id = :owner_id)
           AS submits_override,
       (SELECT max_pending FROM owner_limits WHERE owner_id = :owner_id) AS pending_override,
       (SELECT count(*) FROM jobs
        WHERE owner_id = :owner_id AND state = {lit(JobState.PROCESSING)}) AS running"""


class InsightQueries(StoreBase):
    """Owner-scoped counts for the dashboard and the CLI."""

    def finished_history(self, owner_id: str, window: Window) -> dict[str, Any]:
        """Ended jobs per bucket and end state over the window, oldest bucket first, every
        bucket present (zeros included) so a chart needs no gap filling."""
        span, bucket = WINDOWS[window]
        owner = checked_owner(owner_id)
        rows = self._rows(SQL_HISTORY, owner_id=owner, bucket=bucket, span=span)
        now: datetime = self._rows(SQL_NOW)[0]["now"]
        last = int(now.timestamp()) // bucket
        slots = range(last - span // bucket + 1, last + 1)
        counts = {slot: {s.value: 0 for s in sorted(TERMINAL_STATES)} for slot in slots}
        for row in rows:
            if int(row["slot"]) in counts:
                counts[int(row["slot"])][row["state"]] = int(row["n"])
        return {
            "window": window,
            "bucket_s": bucket,
            "buckets": [{"at": datetime.fromtimestamp(slot * bucket, UTC), "counts": counts[slot]}
                        for slot in slots],
        }

    def owner_limit(self, owner_id: str) -> dict[str, Any]:
        """The caller's concurrency: the stack's default (OWNER_MAX_RUNNING), their override if
        an operator set one, the one that applies (0 = unlimited) and how many run now; and
        the quotas at the door that apply to them (override, else default)."""
        row = self._rows(SQL_LIMITS, owner_id=checked_owner(owner_id))[0]
        default = self._settings.owner_max_running
        override = row["override"]
        return {
            "default_max_running": default,
            "override": override,
            "max_running": default if override is None else int(override),
            "running": int(row["running"]),
            # The quotas at the door (common/api/admission.py) that apply to this owner.
            "max_submits_per_s": (self._settings.owner_max_submits_per_s
                                  if row["submits_override"] is None
                                  else int(row["submits_override"])),
            "max_pending": (self._settings.owner_max_pending if row["pending_override"] is None
                            else int(row["pending_override"])),
            "max_waits": self._settings.owner_max_waits,
        }
