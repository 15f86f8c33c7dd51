"""A user's preset module (PRESET_MODULES) whose handlers return or raise what PostgreSQL cannot
store as it is: NUL, lone surrogates, NaN, objects that are not JSON, exceptions whose message
cannot even be read. Each must end its attempt recorded, never stuck PROCESSING."""

from __future__ import annotations

from typing import Any

from common.presets.base import Handler, PermanentError, TransientError

NUL, LONE = "\x00", "\ud800"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class NotText(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]


def _returns(value: Any) -> Any:
    return lambda ctx, content, options: value


def _raises(exc: BaseException) -> Any:
    def run(ctx: object, content: str, options: object) -> Any:
        raise exc

    return run


# Each: (preset name, handler, the job's expected (error_type, message fragment)).
CASES: list[tuple[str, Any, tuple[str, str]]] = [
    ("out-nul", _returns({"text": "a" + NUL + "b"}), ("InvalidOutput", "at $.text: a string "
                                                      "contains NUL")),
    ("out-nul-key", _returns({"k" + NUL: 1}), ("InvalidOutput", "a key contains NUL")),
    ("out-surrogate", _returns({"list": ["ok", LONE]}), ("InvalidOutput", "at $.list[1]: a "
                                                         "string contains a lone surrogate")),
    ("out-surrogate-key", _returns({LONE: 1}), ("InvalidOutput", "a key contains a lone")),
    ("out-nan", _returns({"x": float("nan")}), ("InvalidOutput", "at $.x: a number that is "
                                                "not finite")),
    ("out-object", _returns({"x": object()}), ("InvalidOutput", "at $.x: a value of type "
                                               "object")),
    ("err-nul", _raises(PermanentError("bad" + NUL + "thing")), ("PermanentError", "badthing")),
    ("err-surrogate", _raises(PermanentError("bad" + LONE)), ("PermanentError", "bad\ufffd")),
    ("err-huge", _raises(PermanentError("x" * 100_000)), ("PermanentError", "x" * 2000)),
    ("err-unprintable", _raises(Unprintable()), ("Unprintable", "could not be read")),
    ("err-not-text", _raises(NotText()), ("NotText", "could not be read")),
    # Transient, on its last attempt: ends FAILED with the (cleaned, bounded) message.
    ("err-transient", _raises(TransientError(NUL + LONE * 3000)), ("TransientError",
                                                                  "\ufffd" * 2000)),
    ("err-exit", _raises(SystemExit(3)), ("SystemExit", "the handler raised SystemExit")),
]

HANDLERS = [
    Handler(name, run, time_limit_s=5, default_max_attempts=1) for name, run, _ in CASES
]
