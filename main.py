"""Entry points of the Cloud Run functions (deploy with --entry-point submit, process or sweep),
and, run as a script, the command line (`python main.py --help`; see cli/).

Each function's module is imported when functions-framework looks its target up, so an instance
of one function never pays the cold-start import of the other two.
"""

from __future__ import annotations

import importlib
from typing import Any

_TARGETS = {name: f"functions.{name}" for name in ("submit", "process", "sweep")}

__all__ = list(_TARGETS)


def __getattr__(name: str) -> Any:
    module = _TARGETS.get(name)
    if module is None:
        raise AttributeError(f"module 'main' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _in_checkout_venv() -> None:
    """Run the CLI with the checkout's .venv (made by `make dev` or `make install`) when there
    is one and this is another interpreter, so a plain `python main.py` finds its packages."""
    import os
    import sys
    from pathlib import Path

    venv = Path(__file__).resolve().parent / ".venv"
    python = venv / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(python, [str(python), os.path.abspath(__file__), *sys.argv[1:]])  # noqa: S606


if __name__ != "__main__":
    # Loaded by functions-framework: its app exists by now, and `errorhandler` registers on it.
    import functions_framework

    def _unrouted(error: Exception) -> Any:
        """The API's 404 problem, its module loaded on first use: `process` answers a 404 only
        to the odd path functions-framework keeps for itself (`/robots.txt`, `/favicon.ico`)
        or cannot route, and the adapter's import (the API's request and problem models) is a
        tenth of a cold start (bench.cold_start)."""
        from functions.http_adapter import unrouted

        return unrouted(error)

    functions_framework.errorhandler(404)(_unrouted)

if __name__ == "__main__":
    import sys

    _in_checkout_venv()
    from pathlib import Path

    # The CLI is built on the checkout's own client package (client/), installed or not.
    sys.path.insert(1, str(Path(__file__).resolve().parent / "client"))
    from cli import main

    sys.exit(main())
