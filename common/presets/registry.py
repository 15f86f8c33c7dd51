"""Which presets exist. The built-ins, plus a user's own: PRESET_MODULES names modules to import,
each exposing `HANDLERS` (a sequence of `Handler`), so adding a preset never means editing
this code. The chaos preset joins only when ENABLE_CHAOS_PRESET is on, the demo preset only
when ENABLE_DEMO_PRESET is (make dev turns it on), and its long variant `demo-long` only where
LONG_JOB_EXECUTOR is set too (make dev: long jobs can run there)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import replace

from common.presets.base import Handler
from common.presets.builtin import BUILTIN_HANDLERS
from common.presets.chaos import RunLog, chaos_handler, no_record
from common.presets.demo import DEMO_HANDLER, DEMO_LONG_HANDLER
from common.settings import Settings, SettingsError


class Registry:
    def __init__(self, handlers: Iterable[Handler]) -> None:
        self._handlers: dict[str, Handler] = {}
        for handler in handlers:
            if handler.name in self._handlers:
                raise SettingsError(f"preset {handler.name!r} is registered twice")
            self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)


def load_registry(settings: Settings, *, chaos_log: RunLog = no_record) -> Registry:
    handlers = list(BUILTIN_HANDLERS)
    if settings.enable_chaos_preset:
        chaos = chaos_handler(chaos_log)
        # The same handler as a long preset (issue 29): the chaos run kills its executions.
        handlers += [chaos, replace(chaos, name="chaos-long", long=True)]
    if settings.enable_demo_preset:
        handlers.append(DEMO_HANDLER)
        if settings.long_job_executor:  # only where long jobs can run (make dev)
            handlers.append(DEMO_LONG_HANDLER)
    for module_name in settings.preset_modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SettingsError(f"PRESET_MODULES: cannot import {module_name}: {exc}") from None
        extra = getattr(module, "HANDLERS", None)
        if not isinstance(extra, list | tuple) or not all(isinstance(h, Handler) for h in extra):
            raise SettingsError(f"PRESET_MODULES: {module_name}.HANDLERS must list Handler objects")
        handlers += extra
    for handler in handlers:
        if handler.long and handler.time_limit_s > settings.long_job_max_s:
            raise SettingsError(f"preset {handler.name!r}: time_limit_s {handler.time_limit_s:g} "
                                f"is above LONG_JOB_MAX_S ({settings.long_job_max_s:g})")
    return Registry(handlers)
