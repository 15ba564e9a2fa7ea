"""The soak benchmark's short version: `bench/soak.py --minutes 0.2` runs and prints RSS samples.

The one-hour soak (`sudo python3 bench/soak.py`, the default --minutes 60) is run by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_prints_rss_samples(mailstack):  # the fixture only checks the stack can run here
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", "0.2", "--test-rules"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = [float(m) for m in re.findall(r"^rss t=\s*[\d.]+s rss_mb=\s*([\d.]+)", proc.stdout, re.M)]
    assert len(samples) >= 5, proc.stdout
    assert all(20 < s < 1000 for s in samples), samples
    assert "messages left unprocessed in the inbox: 0" in proc.stdout
    assert re.search(r"drift [+-][\d.]+ MB", proc.stdout)
