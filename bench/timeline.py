#!/usr/bin/env python3
"""Where a backlog's wall time goes: a CPU timeline of guard's processes and its peers, and probes.

    sudo python3 bench/timeline.py [--count 10000] [--tree DIR] [--burn main:300 | --burn worker:300]

Starts a private stack as bench/backlog.py does, appends COUNT mixed messages and runs
`guard run --once` over them, reading every 5 ms the CPU time (``/proc/PID/task/*/schedstat``, in
nanoseconds) of guard's main process, its worker, the SMTP test server and Dovecot. Prints each
one's average share of a core, the machine's busy share, how the run's time splits by the number of
cores in use, and, for the periods with fewer than 1.5 of the 2 cores busy, who ran then: a process
running alone there is the critical path, and the idle core is what a better overlap would use.
The sampler costs the run a little (the wall time is longer than bench/backlog.py's).

``--tree DIR`` runs guard from another checkout (a worktree of an older commit) on the same stack
code. ``--burn main:US`` or ``--burn worker:US`` spins US microseconds of CPU per message in that
process (bench/_probe_guard.py): if the wall time grows by about COUNT x US either way, that process
is on the critical path.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from _stack import REPO, CpuSampler, Stack
from backlog import append_bulk

ROLES = ("main", "worker", "smtp", "dovecot")
PERIOD = 0.005


def _cpu_ns(pid: int) -> int | None:
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def record(count: int, tree: Path, burn: str | None) -> tuple[float, list[tuple[float, dict[str, dict[int, int | None]]]]]:
    with Stack() as st:
        st.run_once()
        append_bulk(st, count)
        sampler = CpuSampler(st)
        cmd = st.guard_cmd("--once")
        if burn:
            cmd = [cmd[0], str(REPO / "bench" / "_probe_guard.py"), *cmd[3:]]
        env = dict(st.guard_env(), PYTHONPATH=str(tree), GUARD_PROBE_BURN=burn or "")
        samples = []
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            pids = {"main": [proc.pid], "worker": sampler._children(proc.pid), "smtp": [sampler.smtp],
                    "dovecot": [sampler.dovecot, *sampler._children(sampler.dovecot)]}
            samples.append((time.monotonic() - t0, {r: {p: _cpu_ns(p) for p in ps if p} for r, ps in pids.items()}))
            time.sleep(PERIOD)
        wall = time.monotonic() - t0
        if proc.returncode:
            raise SystemExit(f"guard exited with {proc.returncode}")
    return wall, samples


def analyse(samples, skip: float = 1.5) -> dict:
    """Per interval between two samples, each role's cores in use (a process seen in both)."""
    spent = collections.defaultdict(float)
    by_cores = collections.Counter()
    low_spent = collections.defaultdict(float)
    total = low = 0.0
    for (t1, a), (t2, b) in zip(samples, samples[1:]):
        dt = t2 - t1
        if t1 < skip or dt <= 0:  # start-up: imports and model loading, one process alone
            continue
        use = {}
        for r in ROLES:
            ns = sum(b[r][p] - a[r][p] for p in b[r] if b[r][p] is not None and a[r].get(p) is not None)
            use[r] = max(ns, 0) / 1e9 / dt
        cores = sum(use.values())
        total += dt
        by_cores[min(int(cores * 4) / 4, 2.0)] += dt
        for r in ROLES:
            spent[r] += use[r] * dt
        if cores < 1.5:
            low += dt
            for r in ROLES:
                low_spent[r] += use[r] * dt
    return {"seconds": total, "cores": {r: spent[r] / total for r in ROLES},
            "busy": sum(spent.values()) / total / (os.cpu_count() or 2), "by_cores": dict(by_cores),
            "low_share": low / total, "low_cores": {r: low_spent[r] / low if low else 0.0 for r in ROLES}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--tree", type=Path, default=REPO, help="run guard from this checkout (default: this one)")
    ap.add_argument("--burn", default=None, help="main:US or worker:US: CPU spun per message in that process")
    args = ap.parse_args()
    if args.burn and args.burn.partition(":")[0] not in ("main", "worker"):
        raise SystemExit("--burn: main:US or worker:US")
    wall, samples = record(args.count, args.tree.resolve(), args.burn)
    a = analyse(samples)
    print(f"guard run --once over {args.count} messages from {args.tree}{' burning ' + args.burn if args.burn else ''}: "
          f"{wall:.1f} s wall (sampled every {PERIOD * 1000:.0f} ms; load average {os.getloadavg()[0]:.2f})")
    print(f"  after the first 1.5 s ({a['seconds']:.1f} s): average cores in use "
          + ", ".join(f"{r} {a['cores'][r]:.2f}" for r in ROLES) + f"; machine busy {100 * a['busy']:.0f} %")
    for k in sorted(a["by_cores"]):
        print(f"    {k:4.2f}-{k + 0.25:4.2f} cores in use: {100 * a['by_cores'][k] / a['seconds']:5.1f} % of the time")
    print(f"  under 1.5 cores for {100 * a['low_share']:.1f} % of the time; average cores then: "
          + ", ".join(f"{r} {a['low_cores'][r]:.2f}" for r in ROLES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
