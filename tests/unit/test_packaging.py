"""A non-editable install must carry the shipped rules, templates, model folder, samples and defaults."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contains_shipped_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("guard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rule_file in (REPO / "rules").glob("*.toml"):
        assert f"guard/_shipped/rules/{rule_file.name}" in names
    assert "guard/defaults.toml" in names
    assert any(n.startswith("guard/samples/") and n.endswith(".eml") for n in names)
    assert any(n.startswith("guard/_shipped/models/") for n in names)
    assert any(n.startswith("guard/_shipped/templates/") for n in names)
    for lang in ("en", "es", "ca"):
        assert f"guard/_shipped/templates/{lang}/report_verdict.html.j2" in names
    for sheet in (REPO / "events").glob("*.toml"):
        assert f"guard/_shipped/events/{sheet.name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "guard = guard.cli.main:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()
