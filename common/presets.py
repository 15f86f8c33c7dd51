"""Names of the presets a job may ask for.

The handlers themselves (and user-added presets) arrive with the `process` worker; until then
this list is what `submit` accepts, so an unknown preset is refused at the door.
"""

from __future__ import annotations

BUILTIN_PRESETS = ("echo", "text-stats")


def known_presets() -> list[str]:
    return sorted(BUILTIN_PRESETS)
