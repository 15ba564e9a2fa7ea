"""A pytest plugin (loaded by tests/conftest.py): every skipped test listed under a banner at the
end of the run, just above pytest's closing line, so a skip cannot pass unnoticed in CI output."""

from __future__ import annotations


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if getattr(r, "when", "") != "teardown"]
    if not skipped:
        return
    tr = terminalreporter
    tr.section(f"{len(skipped)} TEST(S) SKIPPED: they did NOT run", sep="!", red=True, bold=True)
    for r in skipped:
        tr.line(f"SKIPPED {r.nodeid}: {_reason(r)}", red=True)
