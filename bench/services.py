"""What every benchmark stands on: a durable throwaway PostgreSQL (fsync on) with the schema
migrated, and the Pub/Sub emulator, both stopped when the benchmark ends (also when either
fails to start: whatever started is stopped)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from localstack.emulator import PubSubEmulator
from localstack.postgres import migrate, start_postgres


@contextmanager
def services(
    dbname: str, extra_conf: dict[str, str] | None = None,
) -> Iterator[tuple[str, PubSubEmulator]]:
    """(database URL, emulator); the emulator's environment is exported for the clients here.
    `extra_conf`: more postgresql.conf settings (e.g. pg_stat_statements preloaded)."""
    with ExitStack() as stack:
        server = (start_postgres(durable=True, extra_conf=extra_conf) if extra_conf
                  else start_postgres(durable=True))
        stack.callback(server.stop)
        emulator = PubSubEmulator(project="bench-project").start()
        stack.callback(emulator.stop)
        url = server.url(server.create_database(dbname))
        migrate(url)
        os.environ.update(emulator.env())
        yield url, emulator
