"""The job store: the state machine (`states`), the models, typed errors, and every SQL statement
about jobs, split by concern (`callers`, `worker_moves`, `maintenance_queries`) and joined in
`job_store.JobStore`; the engine factory (`engine`) and the prepared-statement runner.

May import: `common.settings`, `common.logs`, `common.lazy`. Nothing else in `common`.
"""
