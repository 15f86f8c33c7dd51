"""Flow limits as operators and owners set them, and the parked jobs they let go (issue 27).

A preset's limits come from settings (PRESET_LIMITS): each instance writes them on its first
claim (`sync_preset_limits`), changing a row only when it differs. An owner's key limits come
through the API (PUT /limits/{key}). Setting a running limit counts the jobs already running
under it and marks them, so their exits give the slots back; removing a limit un-parks the
jobs it held, for the sweep's next pass to publish. The SQL of the claim's gate and of the
releases is in common/store/flow_sql.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from common.settings import PresetLimit
from common.store.base import StoreBase
from common.store.errors import InvalidInput, LimitNotFound
from common.store.flow_sql import PARKED_ROWS, SQL_TAKE_FLOW_PARKED, SQL_TAKE_FLOW_PARKED_ALL
from common.store.fragments import checked_owner
from common.store.models import LIMIT_KEY_PATTERN, MAX_LIMIT_KEY, DispatchItem

MAX_RUNNING = 100_000
MAX_STARTS = 1_000_000
MAX_INTERVAL_S = 7 * 86_400.0
PRESET = ""  # the owner_id of a preset's row: no owner is the empty string

# Which jobs a row governs, by its bit (1 a preset's, 2 a key's); the same test as GOVERNS.
_JOBS_OF = {1: "preset = :name", 2: "owner_id = :owner_id AND limit_key = :name"}


def _set_sql(bit: int, only_if_changed: bool) -> str:
    """Upsert one row; when its running limit is set, count the jobs running under it now and
    mark them as holding its slot (their exits give it back)."""
    changed = (" WHERE (f.max_running, f.max_starts, f.interval_s) IS DISTINCT FROM "
               "(EXCLUDED.max_running, EXCLUDED.max_starts, EXCLUDED.interval_s)"
               if only_if_changed else "")
    return f"""
WITH run AS (
    SELECT id FROM jobs WHERE {_JOBS_OF[bit]} AND state = 'PROCESSING'
      AND CAST(:max_running AS integer) IS NOT NULL
), lim AS (
    INSERT INTO flow_limits AS f (owner_id, name, max_running, max_starts, interval_s, running)
    VALUES (:owner_id, :name, CAST(:max_running AS integer), CAST(:max_starts AS integer),
            CAST(:interval_s AS float8), (SELECT count(*) FROM run))
    ON CONFLICT (owner_id, name) DO UPDATE SET max_running = EXCLUDED.max_running,
        max_starts = EXCLUDED.max_starts, interval_s = EXCLUDED.interval_s,
        running = EXCLUDED.running, updated_at = now(){changed}
    RETURNING owner_id
), adopted AS (
    UPDATE jobs SET flow_held = COALESCE(flow_held, 0) | {bit}
    WHERE id = ANY(ARRAY(SELECT id FROM run)) AND state = 'PROCESSING'
      AND COALESCE(flow_held, 0) & {bit} = 0 AND EXISTS (SELECT 1 FROM lim)
)
SELECT count(*) AS n FROM lim"""


SQL_SET = {(bit, changed): _set_sql(bit, changed) for bit in (1, 2) for changed in (False, True)}

# A removed limit lets its parked jobs go: un-parked and undispatched, the sweep's next pass
# publishes them (its never-dispatched step), and a claim then finds no limit.
SQL_DELETE = {bit: f"""
WITH gone AS (
    DELETE FROM flow_limits WHERE owner_id = :owner_id AND name = :name RETURNING name
), freed AS (
    UPDATE jobs SET deferred_at = NULL, dispatched_at = NULL, wait_reason = NULL
    WHERE {_JOBS_OF[bit]} AND {PARKED_ROWS} AND EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) AS n FROM gone""" for bit in (1, 2)}

LIMIT_COLS = "name, max_running, max_starts, interval_s, running, next_at, updated_at"
SQL_GET = f"SELECT {LIMIT_COLS} FROM flow_limits WHERE owner_id = :owner_id AND name = :name"
SQL_LIST = f"SELECT {LIMIT_COLS} FROM flow_limits WHERE owner_id = :owner_id ORDER BY name"
SQL_PRESET_NAMES = "SELECT name FROM flow_limits WHERE owner_id = ''"
# When a rate-parked job's limit next has a slot (its reservation frontier).
SQL_RATE_FRONTIER = """
SELECT GREATEST(next_at, now()) AS until FROM flow_limits
WHERE owner_id = :owner_id AND name = :name AND max_starts IS NOT NULL"""


class FlowLimit(BaseModel):
    """A limit as stored: running jobs, and starts per interval; `running` and `next_at` are
    its state (jobs running under it, and when its next start slot is free)."""

    name: str
    max_running: int | None
    max_starts: int | None
    interval_s: float | None
    running: int
    next_at: datetime | None
    updated_at: datetime


def checked_limit(max_running: int | None, max_starts: int | None,
                  interval_s: float | None) -> None:
    """A limit says something, each number in range, and a rate whole: else InvalidInput."""
    if max_running is None and max_starts is None and interval_s is None:
        raise InvalidInput("max_running", "give max_running, or max_starts with interval_s")
    if max_running is not None and (isinstance(max_running, bool)
                                    or not 1 <= max_running <= MAX_RUNNING):
        raise InvalidInput("max_running", f"must be an integer from 1 to {MAX_RUNNING}")
    if (max_starts is None) != (interval_s is None):
        raise InvalidInput("interval_s" if interval_s is None else "max_starts",
                           "give max_starts and interval_s together")
    if max_starts is not None and (isinstance(max_starts, bool)
                                   or not 1 <= max_starts <= MAX_STARTS):
        raise InvalidInput("max_starts", f"must be an integer from 1 to {MAX_STARTS}")
    if interval_s is not None and not 0 < interval_s <= MAX_INTERVAL_S:
        raise InvalidInput("interval_s", f"must be above 0 and at most {MAX_INTERVAL_S:g} s")


def checked_key(key: str) -> str:
    import re

    if not 1 <= len(key) <= MAX_LIMIT_KEY or not re.fullmatch(LIMIT_KEY_PATTERN, key):
        raise InvalidInput("key", f"must be 1 to {MAX_LIMIT_KEY} characters: letters, digits "
                                  "and . _ : @ -, starting with a letter or digit")
    return key


class FlowLimitQueries(StoreBase):
    """Key limits (an owner's), preset limits (settings'), and the releases they make."""

    def set_key_limit(self, owner_id: str, key: str, *, max_running: int | None = None,
                      max_starts: int | None = None, interval_s: float | None = None,
                      ) -> FlowLimit:
        """Replace the owner's limit for `key` (PUT semantics: what is not given is no limit)."""
        owner, name = checked_owner(owner_id), checked_key(key)
        checked_limit(max_running, max_starts, interval_s)
        self._rows(SQL_SET[2, False], owner_id=owner, name=name, max_running=max_running,
                   max_starts=max_starts, interval_s=interval_s)
        return self.key_limit(owner, name)

    def key_limit(self, owner_id: str, key: str) -> FlowLimit:
        rows = self._rows(SQL_GET, owner_id=checked_owner(owner_id), name=checked_key(key))
        if not rows:
            raise LimitNotFound(key)
        return FlowLimit.model_validate(rows[0])

    def key_limits(self, owner_id: str) -> list[FlowLimit]:
        return [FlowLimit.model_validate(r)
                for r in self._rows(SQL_LIST, owner_id=checked_owner(owner_id))]

    def delete_key_limit(self, owner_id: str, key: str) -> None:
        rows = self._rows(SQL_DELETE[2], owner_id=checked_owner(owner_id), name=checked_key(key))
        if not rows or not rows[0]["n"]:
            raise LimitNotFound(key)

    def preset_limits(self) -> list[FlowLimit]:
        return [FlowLimit.model_validate(r) for r in self._rows(SQL_LIST, owner_id=PRESET)]

    def sync_preset_limits(self, limits: dict[str, PresetLimit]) -> None:
        """Make the preset rows say what settings say: changed rows written, removed ones
        deleted (their parked jobs let go). Rows that already agree are not written."""
        for preset, limit in limits.items():
            self._rows(SQL_SET[1, True], owner_id=PRESET, name=preset,
                       max_running=limit.max_running, max_starts=limit.max_starts,
                       interval_s=limit.interval_s)
        for row in self._rows(SQL_PRESET_NAMES):
            if row["name"] not in limits:
                self._rows(SQL_DELETE[1], owner_id=PRESET, name=row["name"])

    def rate_frontier(self, owner_id: str, preset: str, limit_key: str | None,
                      reason: str) -> datetime | None:
        """When the limit that rate-parked a job next has a slot; None if it has no rate."""
        owner, name = (PRESET, preset) if reason.endswith(":preset") else (owner_id, limit_key)
        rows = self._rows(SQL_RATE_FRONTIER, owner_id=owner, name=name)
        return rows[0]["until"] if rows else None

    def take_flow_parked(self, owner_id: str, preset: str, limit_key: str | None,
                         batch: int = 10) -> list[DispatchItem]:
        """The parked jobs the limits over this job's preset and key have room for now."""
        return self._taken(self._rows(SQL_TAKE_FLOW_PARKED, owner_id=owner_id, preset=preset,
                                      limit_key=limit_key, **self._flow_params(batch)))

    def take_flow_parked_all(self, batch: int) -> list[DispatchItem]:
        """The same for every limit (the sweep's safety net), at most `batch` in all."""
        return self._taken(self._rows(SQL_TAKE_FLOW_PARKED_ALL, **self._flow_params(batch)))

    def _flow_params(self, batch: int) -> dict[str, Any]:
        return {"batch": batch, "hold_s": self._settings.flow_hold_s,
                "ahead": self._settings.flow_ahead}

    @staticmethod
    def _taken(rows: list[dict[str, Any]]) -> list[DispatchItem]:
        return [DispatchItem(id=r["id"], attempts=r["attempts"], traceparent=r["traceparent"])
                for r in rows]
