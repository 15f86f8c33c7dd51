"""`make dev`: the whole pipeline on this machine, in the foreground.

PostgreSQL (DATABASE_URL if set, else a server whose data survives a restart: under .local/, or
as root where the server's unprivileged user can reach it, see postgres.cluster_home), the
migrations to head, the Pub/Sub emulator with production's topics and
subscriptions, `submit`, `process` and `sweep` under functions-framework, a relay that pushes
the jobs subscription's messages into `process` several at once (localstack/push_relay.py: the
emulator's own push keeps only about two requests in flight), and a scheduler that calls
`sweep` every few seconds with a scheduler token, as Cloud Scheduler does. It writes
.local/dev-client.json (the URLs and the dev secret, mode 0600) so the CLI in another terminal
finds the stack with no exports, prints the URLs, then every part's output prefixed by its
name. Ctrl-C or SIGTERM stops everything it started, by pid.

    .venv/bin/python -m localstack.dev [--submit-port 8080 --process-port 8081 ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from localstack import dev_client
from localstack.emulator import PubSubEmulator
from localstack.function_server import FunctionServer
from localstack.paths import ROOT
from localstack.postgres import PostgresServer, migrate, start_postgres
from localstack.push_relay import PushRelay
from localstack.topology import Topology

SCHEDULER = "local-scheduler"
# As many pushes at once as one Cloud Run instance of `process` takes (its concurrency, 8).
DEFAULT_PUSH_CONCURRENCY = 8
_print_lock = threading.Lock()


def say(part: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{part:<8}| {line}\n")
        sys.stdout.flush()


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make dev", description=__doc__.split("\n\n")[0])
    p.add_argument("--submit-port", type=int, default=_env_int("SUBMIT_PORT", 8080))
    p.add_argument("--process-port", type=int, default=_env_int("PROCESS_PORT", 8081))
    p.add_argument("--sweep-port", type=int, default=_env_int("SWEEP_PORT", 8082))
    p.add_argument("--emulator-port", type=int, default=_env_int("EMULATOR_PORT", 8085))
    p.add_argument("--pg-port", type=int, default=_env_int("DEV_PG_PORT", 54329))
    p.add_argument("--sweep-every", type=float, default=float(os.environ.get("SWEEP_EVERY_S", 10)))
    p.add_argument("--push-concurrency", type=int,
                   default=_env_int("DEV_PUSH_CONCURRENCY", DEFAULT_PUSH_CONCURRENCY),
                   help="messages pushed into process at once (its request threads match)")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("DEV_DATA_DIR", ROOT / ".local")))
    return p.parse_args(argv)


class DevStack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.postgres: PostgresServer | None = None
        self.emulator: PubSubEmulator | None = None
        self.servers: list[FunctionServer] = []
        self.relay: PushRelay | None = None
        self.stopping = threading.Event()
        self.database_url = ""
        self.secret = ""
        self.env: dict[str, str] = {}

    def _secret(self) -> str:
        """One dev signing secret per data dir, so tokens survive a restart."""
        path = self.args.data_dir / "dev-secret"
        if not path.exists():
            self.args.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable
            with os.fdopen(fd, "w") as fh:                                   # by others
                fh.write(secrets.token_urlsafe(32))
        return str(path.read_text()).strip()

    def start(self) -> None:
        a = self.args
        self.secret = self._secret()
        if url := os.environ.get("DATABASE_URL"):
            self.database_url = url
            say("postgres", "using DATABASE_URL")
        else:
            self.postgres = start_postgres(durable=True, root=a.data_dir / "postgres",
                                           port=a.pg_port)
            self.database_url = self.postgres.url(self.postgres.ensure_database("jobs"))
            say("postgres", f"embedded server on 127.0.0.1:{a.pg_port}, data in "
                            f"{self.postgres.home}")
        migrate(self.database_url)
        say("postgres", "migrations applied (alembic upgrade head)")
        self.emulator = PubSubEmulator(project="local-project", port=a.emulator_port).start()
        os.environ.update(self.emulator.env())
        say("pubsub", f"emulator on {self.emulator.host}")
        topology = Topology(project="local-project")
        process_url = f"http://127.0.0.1:{a.process_port}/"
        self.env = {
            **self.emulator.env(),
            **topology.env(),
            "DATABASE_URL": self.database_url,
            "AUTH_HS256_SECRET": self.secret,
            "SWEEP_ALLOW_DEV_TOKENS": "true",
            "SWEEP_ALLOWED_INVOKERS": json.dumps([SCHEDULER]),
            "LEASE_SECONDS": "60",
            "RETRY_BASE_S": "2",
            "RETRY_CAP_S": "30",
            "REDISPATCH_AFTER_S": "120",
            # Webhook receivers on this machine (http://127.0.0.1:…) are allowed here only.
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "HEARTBEAT_S": "1",  # progress shows within a second
            # A job that takes as long as you ask, with progress (docs/presets.md).
            "ENABLE_DEMO_PRESET": "true",
            # Long jobs (`demo-long`, docs/worker.md) run as child processes of process.
            "LONG_JOB_EXECUTOR": "local",
            "PYTHONUNBUFFERED": "1",
        }
        # process serves as many requests at once as the relay sends (gunicorn's threads).
        threads = {"process": {"THREADS": str(a.push_concurrency)}}
        for target, port, probe in (("submit", a.submit_port, "/healthz"),
                                    ("process", a.process_port, "/"),
                                    ("sweep", a.sweep_port, "/")):
            self.servers.append(FunctionServer(
                target, ROOT / "main.py", {**self.env, **threads.get(target, {})}, probe=probe,
                port=port, on_line=functools.partial(say, target),
            ))
        topology.create(None, pull=True)
        self.relay = PushRelay(
            topology.path("subscriptions", topology.push_subscription), process_url,
            concurrency=a.push_concurrency, ack_deadline_s=topology.ack_deadline_s,
            on_line=functools.partial(say, "relay"),
        ).start()
        say("pubsub", f"topics {topology.jobs_topic}, {topology.dead_letter_topic}, "
                      f"{topology.results_topic}; subscription {topology.push_subscription} "
                      f"relayed to {process_url}, {a.push_concurrency} pushes at once")
        threading.Thread(target=self._scheduler, daemon=True, name="scheduler").start()
        dev_client.write(self.client_file, dev_client.DevClient(
            submit_url=f"http://127.0.0.1:{a.submit_port}",
            sweep_url=f"http://127.0.0.1:{a.sweep_port}", secret=self.secret,
            database_url=self.database_url))

    @property
    def client_file(self) -> Path:
        return Path(self.args.data_dir) / dev_client.FILE_NAME

    def _scheduler(self) -> None:
        """Cloud Scheduler's part: POST / to sweep with a fresh scheduler token, through the
        project's one HTTP client. No retries: the next tick is the retry."""
        from jobs_client import ApiError, JobsClient, Unreachable

        from common.api.auth import issue_dev_token

        sweep = JobsClient(f"http://127.0.0.1:{self.args.sweep_port}",
                           lambda: issue_dev_token(self.secret, SCHEDULER, ttl_s=300),
                           retries=0, timeout_s=60)
        while not self.stopping.wait(self.args.sweep_every):
            try:
                summary = sweep.call("POST", "/")
            except ApiError as err:
                say("schedule", f"sweep answered {err.status}: {err}")
                continue
            except Unreachable as err:
                say("schedule", f"sweep unreachable: {err}")
                continue
            if "skipped" in summary:  # another pass was running, or no migrations yet
                say("schedule", f"sweep skipped: {summary['skipped']}")
                continue
            steps, queue = summary["steps"], summary["queue"]
            say("schedule", (
                f"sweep: rescued {steps['rescue']['rescued']}, "
                f"published {steps['redispatch']['published']}, "
                f"delivery failures {steps['dead_letters']['delivery_failed']}, "
                f"deleted {steps['retention']['deleted_jobs']}; queue {queue['depth']}"
            ))

    def banner(self) -> None:
        from common.api.auth import issue_dev_token

        a = self.args
        token = issue_dev_token(self.secret, "dev", ttl_s=86400)  # the dashboard's sign-in
        pids = [s.pid for s in self.servers]
        if self.emulator is not None and self.emulator.pid:
            pids.append(self.emulator.pid)
        lines = [
            "",
            "jobs-pipeline is running; Ctrl-C stops everything.",
            f"  submit   http://127.0.0.1:{a.submit_port}   (OpenAPI at /openapi.json)",
            # The token rides in the #fragment, which browsers never send to a server.
            f"  dashboard http://127.0.0.1:{a.submit_port}/ui/#token={token}",
            f"  process  http://127.0.0.1:{a.process_port}   "
            f"(up to {a.push_concurrency} pushes at once)",
            f"  sweep    http://127.0.0.1:{a.sweep_port}   (called every {a.sweep_every:g} s)",
            f"  pubsub   {self.emulator.host if self.emulator else '-'}",
            f"  postgres {self.database_url}",
            "",
            "The CLI finds this stack with no exports: it reads the URLs and the secret that",
            f"signs dev tokens from {self.client_file} (mode 0600). In another terminal:",
            '  python main.py submit --preset text-stats --content "Hello there." --wait',
            "  python main.py submit --preset demo --content 4 --wait   (4 s, with progress)",
            "  python main.py list",
            f'  curl -H "Authorization: Bearer $(python main.py token dev)" '
            f"http://127.0.0.1:{a.submit_port}/jobs",
            "",
            "pids " + " ".join(str(p) for p in pids),
            "ready",
            "",
        ]
        with _print_lock:
            sys.stdout.write("\n".join(lines))
            sys.stdout.flush()

    def stop(self) -> None:
        self.stopping.set()
        if self.relay is not None:  # first: no push into a server that is going away
            self.relay.stop()
        for server in reversed(self.servers):
            server.close()
        if self.emulator is not None:
            self.emulator.stop()
        if self.postgres is not None:
            self.postgres.stop()
        say("dev", "stopped")


def main(argv: list[str] | None = None) -> int:
    stack = DevStack(parse(argv))

    def stop(signum: int, _frame: Any) -> None:
        stack.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stack.start()
        stack.banner()
        while not stack.stopping.wait(0.5):
            for server in stack.servers:
                if not server.alive():
                    say("dev", f"{server.target} exited; stopping")
                    stack.stopping.set()
    except Exception as exc:
        say("dev", f"could not start: {exc}")
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    # The scheduler thread calls sweep through the checkout's own client package (client/),
    # as the CLI does, whether or not `make install` has installed it yet.
    sys.path.insert(1, str(ROOT / "client"))
    raise SystemExit(main())
