"""The local stack: the real parts the pipeline runs on, started on this machine for `make dev`,
the tests and the benchmarks: a PostgreSQL server, the Pub/Sub emulator with production's
topology, and the functions under functions-framework."""
