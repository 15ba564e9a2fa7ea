"""SIGTERM while ``guard run`` starts (configuration, rules, model, templates) ends it cleanly.

Before the daemon's event loop installed its handlers, Python's default SIGTERM action killed
the process (exit -15, a failed unit for systemd) half-way through loading the model. Now
``guard run`` records SIGTERM/SIGINT from its first instant, abandons start-up at the next step
with exit status 0 and one log line, and processes no mail (guard/cli/daemon.py,
guard/daemon/supervisor.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_fakes import FakeMailbox, FakeMailer, StubClassifier

from guard.daemon import supervisor as accounts
from guard.daemon.supervisor import Supervisor
from guard.daemon.health import Health
from guard.daemon.journal import Journal
from guard.daemon.metrics import Registry
from guard.settings import load_settings

REPO = Path(__file__).resolve().parents[3]

INSTITUTE_TOML = """[institute]
name = "Centre de Recerca Matemàtica"
short_name = "CRM"
official_domains = ["crm.cat"]
events_address = "events@crm.cat"
website = "https://www.crm.cat"
scam_warning_url = "https://www.crm.cat/scam-warning"
code_of_conduct_url = "https://www.crm.cat/code-of-conduct"
[institute.coordinator]
name = "Núria Hernández"
address = "nhernandez@crm.cat"
"""


def unreachable_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp_path: Path) -> Path:
    port = unreachable_port()
    path = tmp_path / "guard.toml"
    path.write_text(f"""{INSTITUTE_TOML}
[imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "events@crm.cat"
password = "x"
reconnect_initial_seconds = 0.5
reconnect_max_seconds = 2

[smtp]
host = "127.0.0.1"
port = {port}
tls = "none"

[daemon]
journal = "{tmp_path / 'journal.sqlite3'}"

[health]
enabled = false
""")
    return path


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "guard", "--config", str(config(tmp_path)), "run",
                             "--log-level", "DEBUG", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


class Output:
    """The process's output, read by a thread (so waiting for a line has a timeout)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc) -> None:
        for raw in proc.stdout:
            with self.cond:
                self.lines.append(raw.decode(errors="replace"))
                self.cond.notify_all()

    def wait_for(self, needle: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(needle in line for line in self.lines), timeout)

    def text(self) -> str:
        self.thread.join(5)
        if not self.thread.is_alive():
            self.proc.stdout.close()
        return "".join(self.lines)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> float:
    proc.send_signal(sig)
    t = time.monotonic()
    try:
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return time.monotonic() - t


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_loading_abandons_start_up_cleanly(tmp_path, sig):
    proc = start(tmp_path)
    out = Output(proc)
    # "starting" is logged once the start-up handler is in place, before the configuration, the
    # rules and the model are loaded: the signal lands in the middle of start-up (without the
    # line -- an older guard -- or when it is slow to come, the signal goes after 0.8 s: guard
    # spends longer than that starting, and is in start-up either way)
    out.wait_for("guard run: starting", 0.8)
    took = stop(proc, sig)
    text = out.text()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{text}"
    assert took < 10, took
    assert f"{signal.Signals(sig).name} received during start-up" in text and "start-up abandoned" in text
    assert "watching INBOX" not in text and "IMAP connect" not in text  # no mailbox opened, no mail processed
    assert not (tmp_path / "journal.sqlite3").exists()


def test_immediate_signal_is_not_fatal(tmp_path):
    """Even during the imports and the parsing the process does not die of the signal."""
    proc = start(tmp_path, "--no-model")
    out = Output(proc)
    time.sleep(0.15)
    stop(proc)
    text = out.text()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{text}"


def test_sigterm_after_start_up_still_finishes_normally(tmp_path):
    proc = start(tmp_path, "--no-model")
    out = Output(proc)
    assert out.wait_for("IMAP connect", 30), out.text()  # running: the unreachable server is being retried
    stop(proc)
    text = out.text()
    assert proc.returncode == 0 and "SIGTERM received: finishing the current message" in text, text
    assert "start-up abandoned" not in text


def test_supervisor_sees_a_signal_that_came_while_it_was_built(monkeypatch):
    """The last gap: after the model, before the event loop's handlers (guard/daemon/supervisor.py)."""
    mb = FakeMailbox()
    settings = load_settings(daemon={"account": "events@crm.cat"})
    sup = Supervisor(settings, StubClassifier(), mode="live", health=Health(stale_seconds=60, registry=Registry()),
                     mailbox_factory=lambda s: mb, mailer_factory=lambda s: FakeMailer(), journal=Journal(":memory:"))
    monkeypatch.setattr(accounts, "startup_signal", lambda: signal.SIGTERM)
    t = time.monotonic()
    assert asyncio.run(sup.main()) == 0
    assert time.monotonic() - t < 2
    assert not sup.watchers[0].daemon.connected_once.is_set()  # the mailbox was never opened
