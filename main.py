"""Entry points of the Cloud Run functions (deploy with --entry-point submit, process or sweep)."""

from functions.submit import submit

__all__ = ["submit"]
