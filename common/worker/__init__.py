"""What `process` does with one delivery (`runner`): decode, claim under a lease, run the
preset's handler with a time limit and heartbeat, and write the outcome fenced by attempt.

May import: `store`, `presets`, `messaging` and the top level. Never `api` or `maintenance`.
"""
