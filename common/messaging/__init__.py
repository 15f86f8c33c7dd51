"""Pub/Sub: lazily built clients (`pubsub`), the job message codec (`job_message`), publishing
job messages (`dispatch`) and results notifications (`notify`).

The codec lives here, not in `worker`, because both ends use it: `dispatch` encodes for
`submit` and the sweep, while the worker and the dead-letter step decode.

May import: `store` (models and states) and the top level.
"""
