"""The sweep's steps, each a small service that can run (and be tested) alone: rescue expired
leases, re-dispatch what is due, settle dead letters, apply retention. `sweep` runs one pass
of them within a time budget and reports.

May import: `store`, `messaging`, `service` and the top level. Never `api` or `worker`.
"""
