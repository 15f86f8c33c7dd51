"""Entry points of the Cloud Run functions (deploy with --entry-point submit, process or sweep)."""

from functions.process import process
from functions.submit import submit
from functions.sweep import sweep

__all__ = ["process", "submit", "sweep"]
