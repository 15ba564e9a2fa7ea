"""`guard` with CPU burnt on purpose per message, for bench/timeline.py (a probe, never a figure of guard's own).

    python bench/_probe_guard.py --config FILE run --once      (GUARD_PROBE_BURN="main:300" or "worker:300")

Before each message's decision (main) or analysis (worker), spins for that many microseconds of the
thread's CPU time, then runs guard as ``python -m guard`` does. How much a backlog's wall time grows
with CPU added in one process tells whether that process is on the critical path.
"""

from __future__ import annotations

import os
import sys
import time


def _burn(microseconds: float) -> None:
    end = time.thread_time() + microseconds / 1e6
    while time.thread_time() < end:
        pass


def main() -> int:
    where, _, amount = os.environ.get("GUARD_PROBE_BURN", "").partition(":")
    us = float(amount or 0)
    if where == "main" and us > 0:
        from guard.daemon import executor

        decide = executor.Executor._decide

        def burning_decide(self, *args, **kwargs):
            _burn(us)
            return decide(self, *args, **kwargs)

        executor.Executor._decide = burning_decide
    elif where == "worker" and us > 0:
        from guard.daemon import budget

        analyse = budget.analyse

        def burning_analyse(*args, **kwargs):
            _burn(us)
            return analyse(*args, **kwargs)

        budget.analyse = burning_analyse  # the forked worker inherits it
    from guard.cli.main import entry

    sys.argv = ["guard", *sys.argv[1:]]
    entry()  # exits with guard's own status
    return 0


if __name__ == "__main__":
    sys.exit(main())
