"""A user's own preset module, as PRESET_MODULES would name it."""

from common.presets.base import Handler


def shout(ctx: object, content: str, options: object) -> dict[str, str]:
    return {"shout": content.upper()}


HANDLERS = [Handler("shout", shout, time_limit_s=5, default_max_attempts=2)]
