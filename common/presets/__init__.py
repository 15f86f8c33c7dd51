"""Preset handlers: what a job of each preset does. See `base` for the contract, `builtin` for
the presets that ship, and `registry` for how presets (including a user's own) are found.

Its own package rather than part of `worker`: `submit` validates a preset's options before it
accepts a job, and the API may not import the worker.

May import: the top level only.
"""
