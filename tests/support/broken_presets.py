"""A PRESET_MODULES entry that does not expose Handler objects."""

HANDLERS = ["not a handler"]
