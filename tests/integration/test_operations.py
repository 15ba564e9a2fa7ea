"""guard run as a process against the real stack: two [[accounts]] (one with a wrong password),
/healthz and /metrics on a loopback port, SIGHUP reload (a broken policy is refused and the old
one kept), JSON logs without message content, SIGTERM exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from daemon_messages import COORDINATOR, EVENTS, INSTITUTE_TOML, PARTICIPANT, inquiry, scam
from stack_module import integration_conftest

pytestmark = pytest.mark.integration




_free_ports = integration_conftest()._free_ports

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHIPPED_POLICY = REPO / "rules" / "policy.toml"


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(cond, timeout: float = 30, what: str = "condition", log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s" + (f":\n{log.read_text()[-4000:]}" if log else ""))


def test_two_accounts_health_metrics_reload_and_sigterm(clean_mailstack, tmp_path):
    ms = clean_mailstack
    (port,) = _free_ports(1)
    good_pw, bad_pw = tmp_path / "good", tmp_path / "bad"
    good_pw.write_text("secret\n")
    bad_pw.write_text("wrong-password\n")
    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED_POLICY.read_text())
    log = tmp_path / "guard.log"

    def account(name, user, pw):
        return f"""
[[accounts]]
name = "{name}"
[accounts.imap]
host = "127.0.0.1"
port = {ms.imap_port}
tls = "starttls"
ca_file = "{ms.ca_cert}"
username = "{user}"
password_file = "{pw}"
idle_seconds = 5
reconnect_initial_seconds = 0.5
reconnect_max_seconds = 2
timeout_seconds = 10
"""

    config = tmp_path / "guard.toml"
    config.write_text(f"""
{INSTITUTE_TOML}{account("events", EVENTS, good_pw)}
{account("alice", "alice@example.org", bad_pw)}
[smtp]
host = "127.0.0.1"
port = {ms.smtp_port}
tls = "none"

[daemon]
journal = "{tmp_path / 'journal.sqlite3'}"
policy_file = "{policy}"
max_replies_per_hour = 10000
trusted_authserv_ids = ["mx.crm.cat"]

[health]
enabled = true
port = {port}
stale_seconds = 30

[logging]
format = "json"

[rules]
shipped_dir = "{HERE / 'daemon_rules'}"
local_dir = "{tmp_path / 'no-local-rules'}"
""")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "guard", "--config", str(config), "run", "--no-model"],
                                cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            # the good account connects; the bad one is refused and retried, alone
            def only_alice_unhealthy():
                try:
                    status, body = http(port, "/healthz")
                except OSError:
                    return None
                return body if status == 503 and "alice: IMAP not connected (IMAP login as alice@example.org " \
                    "refused" in body and "events" not in body else None

            wait_for(only_alice_unhealthy, what="healthz naming only alice, refused", log=log)

            ms.send(inquiry(), PARTICIPANT, [EVENTS])
            ms.send(scam(), "housing@travellerpoint.example", [EVENTS])
            wait_for(lambda: len(ms.fetch_all(EVENTS, "Guard/Routed")) == 1, what="inquiry routed", log=log)
            wait_for(lambda: ms.fetch_all(EVENTS) == [], what="inbox emptied", log=log)
            ms.wait_for_messages(COORDINATOR, 1)

            status, metrics = http(port, "/metrics")
            assert status == 200
            assert 'guard_messages_total{account="events",category="inquiry"} 1' in metrics
            assert 'guard_messages_total{account="events",category="scam"} 1' in metrics
            assert 'guard_replies_sent_total{account="events",kind="reply"} 1' in metrics
            assert 'guard_imap_connected{account="events"} 1' in metrics
            assert 'guard_imap_connected{account="alice"} 0' in metrics
            assert 'guard_errors_total{account="alice",kind="imap"}' in metrics
            assert 'guard_processing_seconds_count{account="events"} 2' in metrics

            # SIGHUP with a broken policy: refused, the old one kept; then a good one is taken
            policy.write_text(SHIPPED_POLICY.read_text().replace('template = "inquiry_ack"', 'template = "no_such"'))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed, keeping the running configuration" in log.read_text(), what="refusal",
                     log=log)
            policy.write_text(SHIPPED_POLICY.read_text())
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload done" in log.read_text(), what="reload", log=log)
            ms.send(scam(), "housing@travellerpoint.example", [EVENTS])
            wait_for(lambda: len(ms.fetch_all(EVENTS, "Guard/Quarantine")) == 2, what="scam after reload", log=log)
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(30)
    assert rc == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert records and any(r["logger"] == "guard.decision" for r in records)
    assert any("SIGTERM received" in r["message"] for r in records)
    text = log.read_text()
    assert "Invitation letter for my visa" not in text and "credit card is required" not in text
    assert "wrong-password" not in text and "secret" not in text.replace("secrets", "")
