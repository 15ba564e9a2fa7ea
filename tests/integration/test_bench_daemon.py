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
    m = re.search(r"total ([\d.]+) s\s+(\d+) msg/s\s+done (\d+)\s+left in inbox (\d+)", out)
    assert m, out
    assert int(m.group(3)) == 300 and int(m.group(4)) == 0
    assert "replies/forwards/alerts accepted by SMTP" in out


def test_short_latency_run_prints_percentiles(mailstack):
    out = run_bench(str(REPO / "bench" / "latency.py"), "-n", "12", "--test-rules")
    m = re.search(r"acknowledgement to participant\s+min ([\d.]+) s\s+p50 ([\d.]+) s\s+p90 ([\d.]+) s\s+p99 ([\d.]+) s",
                  out)
    assert m, out
    lo, p50, p90, p99 = map(float, m.groups())
    assert 0 < lo <= p50 <= p90 <= p99
