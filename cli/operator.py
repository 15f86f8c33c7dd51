"""The operator's commands, which talk to the database rather than the API: `migrate`, and
`limit` (per-owner concurrency limits and quotas are an operator's setting, not an owner's).

    python main.py migrate                                   # alembic upgrade head
    python main.py limit set OWNER N | limit clear OWNER | limit list
    python main.py limit quota OWNER submits-per-s|pending N|clear

They find the database in DATABASE_URL (or INSTANCE_CONNECTION_NAME for Cloud SQL), else in
the file `make dev` writes. An owner is always namespaced by who vouches for it: `hs256:<sub>`
for a dev or service token's subject, `google:<sub>` for a Google identity.

`limit`'s `default` is the stack's OWNER_MAX_RUNNING as the API reports it (`GET /limits`), not
whatever this shell's environment says; when the API cannot be asked it is null, and
`default_unknown` says why.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from jobs_client import ClientError

from cli.schedules import UsageError

_OWNER = re.compile(r"^(hs256|google):.+$", re.S)
QUOTA_NAMES = {"submits-per-s": "max_submits_per_s", "pending": "max_pending"}


def add_commands(sub: Any) -> None:
    sub.add_parser("migrate", help="alembic upgrade head (DATABASE_URL or Cloud SQL); then "
                   "GRANT jobs_app to the users in DB_APP_USERS (comma-separated)")
    lim = sub.add_parser("limit", help="per-owner running limits and quotas at the door "
                         "(operators; database)")
    lsub = lim.add_subparsers(dest="limit_command", required=True)
    st = lsub.add_parser("set", help="at most N PROCESSING jobs for OWNER (0 = unlimited)")
    st.add_argument("owner", help="a namespaced owner, e.g. hs256:alice or google:123")
    st.add_argument("n", type=int)
    lsub.add_parser("clear", help="remove OWNER's override").add_argument("owner")
    lsub.add_parser("list", help="the owners with an override, and how many jobs each runs now; "
                    "`default` is the stack's OWNER_MAX_RUNNING, asked of the API")
    qt = lsub.add_parser("quota", help="OWNER's quota at the door: submits per second (per "
                         "instance) or PENDING jobs; N (0 = unlimited) or `clear` for the default")
    qt.add_argument("owner", help="a namespaced owner, e.g. hs256:alice or google:123")
    qt.add_argument("quota", choices=sorted(QUOTA_NAMES))
    qt.add_argument("value", help="N, or clear")


def database_settings() -> Any:
    """Settings for a command that talks to the database: the variables, else `make dev`'s
    database (its file is only ever written by make dev, for a loopback server)."""
    from common.settings import SettingsError, load_settings

    if not (os.environ.get("DATABASE_URL") or os.environ.get("INSTANCE_CONNECTION_NAME")):
        try:
            from localstack import dev_client
        except ImportError:  # a deployed tree has no localstack
            dev_client = None  # type: ignore[assignment]
        if dev_client is not None:
            try:
                dev = dev_client.read()
            except dev_client.DevClientFileError as exc:
                raise UsageError(str(exc)) from None
            if dev is not None and dev.database_url:
                os.environ["DATABASE_URL"] = dev.database_url
    try:
        return load_settings()
    except SettingsError as exc:
        reason = str(exc).replace("Value error, ", "")
        raise UsageError(f"{reason} (or start `make dev`, whose database is used then)") from None


def database_message(exc: BaseException) -> str:
    """The server's own words (pg8000 carries them as a dict: M is the message), one line."""
    orig = getattr(exc, "orig", exc)
    detail = orig.args[0] if orig.args else orig
    if isinstance(detail, dict):
        detail = detail.get("M", detail)
    return " ".join(str(detail).split())[:200]


def _quota_value(raw: str) -> int | None:
    if raw == "clear":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise UsageError(f"a quota is a whole number (0 = unlimited) or `clear`, not {raw!r}")
    return int(raw)


def run_limit(args: argparse.Namespace, stack_default: Callable[[], int]) -> Any:
    """Set, clear or list overrides; `stack_default` asks the API for OWNER_MAX_RUNNING."""
    from sqlalchemy.exc import SQLAlchemyError

    from common.store.engine import create_engine_from_settings
    from common.store.errors import DatabaseUnavailable, InvalidInput
    from common.store.job_store import JobStore

    owner: str = getattr(args, "owner", "")
    if args.limit_command != "list" and not _OWNER.match(owner):
        raise UsageError(f"owner {owner!r} names no one: owners are namespaced, e.g. "
                         "hs256:alice (the subject of a dev or service token) or google:<sub>")
    settings = database_settings()
    default, unknown = _ask(stack_default)
    if args.limit_command == "clear":
        # Clearing hands the owner back to the stack's default: if that is a limit, the
        # owner's running jobs are adopted into its slot count (fair_share._ADOPT). The
        # default is the stack's, not this shell's; when it cannot be asked, adopt anyway:
        # counting slots under no limit costs nothing, missing them lets the owner overrun.
        settings = settings.model_copy(
            update={"owner_max_running": default if default is not None else 1})
    engine = create_engine_from_settings(settings)
    try:
        store = JobStore(engine, settings)
        try:
            if args.limit_command == "set":
                store.set_owner_limit(owner, args.n)
            elif args.limit_command == "clear":
                if not any(row["owner_id"] == owner and row["max_running"] is not None
                           for row in store.owner_limits()):
                    raise UsageError(f"{owner} has no override to clear")
                store.set_owner_limit(owner, None)
            elif args.limit_command == "quota":
                store.set_owner_quota(owner, QUOTA_NAMES[args.quota], _quota_value(args.value))
            owners = store.owner_limits()
        except InvalidInput as exc:
            raise UsageError(f"{exc.field}: {exc.message}") from None
        except DatabaseUnavailable:
            raise UsageError("cannot reach the database", code=2) from None
        except SQLAlchemyError as exc:  # no such database, no such table (not migrated), …
            raise UsageError(f"database error: {database_message(exc)}") from None
    finally:
        engine.dispose()
    if unknown is not None:
        return {"default": None, "default_unknown": unknown, "owners": owners}
    return {"default": default, "owners": owners}


def _ask(stack_default: Callable[[], int]) -> tuple[int | None, str | None]:
    """(the stack's default, None), or (None, why it could not be asked)."""
    try:
        return stack_default(), None
    except (ClientError, UsageError) as exc:
        return None, str(exc)


def migrate() -> dict[str, Any]:
    """Upgrade to head; then GRANT jobs_app to DB_APP_USERS. What was done, for the output."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    from common.store.errors import DatabaseUnavailable
    from common.store.migration_guard import MigrationRefused, NewerDatabase

    database_settings()  # a clear error if there is no database to migrate
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = Config(os.path.join(root, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(root, "migrations"))
    try:
        command.upgrade(config, "head")
    except NewerDatabase as exc:  # a rollback: the older code deploys against the newer schema
        print(f"not migrating: {exc}", file=sys.stderr)
        return {"migrated_to": None, "not_migrating": str(exc), "granted": []}
    except MigrationRefused as exc:
        raise UsageError(f"not migrated: {exc}") from None
    except DatabaseUnavailable:
        raise UsageError("cannot reach the database", code=2) from None
    except SQLAlchemyError as exc:
        if type(exc).__name__ in ("OperationalError", "InterfaceError"):  # never connected
            raise UsageError(f"cannot reach the database: {database_message(exc)}",
                             code=2) from None
        raise UsageError(f"database error: {database_message(exc)}") from None
    users = [u.strip() for u in os.environ.get("DB_APP_USERS", "").split(",") if u.strip()]
    if users:
        from common.settings import load_settings
        from common.store.engine import create_engine_from_settings, grant_app_role

        engine = create_engine_from_settings(load_settings(), autocommit=False)
        try:
            grant_app_role(engine, users)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        finally:
            engine.dispose()
    return {"migrated_to": "head", "granted": users}
