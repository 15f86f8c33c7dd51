"""Preset handlers: what a job of each preset does. See `base` for the contract, `builtin` for
the presets that ship, and `registry` for how presets (including a user's own) are found."""
