"""The daemon benchmarks' short versions run and print their figures (the figures themselves are
measured by hand at full size: bench/README.md). Nothing here asserts a speed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_short_backlog_is_worked_through_completely(mailstack):  # the fixture checks the stack can run here
    out = run_bench(str(REPO / "bench" / "backlog.py"), "--count", "300", "--test-rules")
    # the table row: messages, total s, msg/s, wall ms/msg, CPU ms/msg, empty run s, SMTP sends, journal states
    m = re.search(r"^\s+300\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\{.*\})$", out, re.M)
    assert m, out
    assert m.group(7) == "{'done': 300}", out  # every message worked through, none left or failed
    assert int(m.group(6)) > 0  # replies and forwards were accepted by SMTP


def test_short_latency_run_prints_percentiles(mailstack):
    out = run_bench(str(REPO / "bench" / "latency.py"), "-n", "12", "--test-rules")
    m = re.search(r"acknowledgement to participant\s+min ([\d.]+) s\s+p50 ([\d.]+) s\s+p90 ([\d.]+) s\s+p99 ([\d.]+) s",
                  out)
    assert m, out
    lo, p50, p90, p99 = map(float, m.groups())
    assert 0 < lo <= p50 <= p90 <= p99
