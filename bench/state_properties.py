"""The state-machine property test (tests/test_state_properties.py) with a long budget: the
same derandomized rules and invariants on real PostgreSQL, with many more examples and steps
than CI runs. Prints and records the examples, steps and what the steps did; exits 1 if a
property failed.

    .venv/bin/python -m bench.state_properties   # BENCH_PROPS_EXAMPLES (1000), _STEPS (100)
"""

from __future__ import annotations

import os
import time

import pytest

from bench.results import record


def main() -> int:
    examples = int(os.environ.get("BENCH_PROPS_EXAMPLES", "1000"))
    steps = int(os.environ.get("BENCH_PROPS_STEPS", "100"))
    # Read by the test module when pytest imports it, below.
    os.environ["STATE_PROPS_EXAMPLES"] = str(examples)
    os.environ["STATE_PROPS_STEPS"] = str(steps)
    started = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--timeout=0",
                        "tests/test_state_properties.py::"
                        "test_state_machine_properties_hold_under_any_interleaving"])
    took = time.perf_counter() - started
    from tests.support.state_machine import TALLY  # filled by the run above, same process

    ran = TALLY["invariant checks"]
    print(f"state properties: {examples} examples, up to {steps} steps each, {ran} checked "
          f"states, {took:.0f} s: " + ("held" if code == 0 else "FAILED"))
    record("state_properties", examples=examples, max_steps=steps, checked_states=ran,
           seconds=took, passed=code == 0, tally=dict(sorted(TALLY.items())))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
