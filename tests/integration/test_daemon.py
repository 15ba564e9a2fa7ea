"""`guard run` against the real stack: Dovecot (IMAP, LMTP) and the SMTP test server.

The basic flows run `guard run --once` in-process; the crash and restart tests run the daemon
as a subprocess (`python -m guard run`), kill it with SIGKILL, restart Dovecot under it.
A small fixed rule set (daemon_rules/) keeps these tests independent of rule tuning.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_messages import (
    COORDINATOR,
    EVENTS,
    INSTITUTE_TOML,
    PARTICIPANT,
    SCAMMER,
    bounce,
    inquiry,
    out_of_office,
    report,
    scam,
)

from harness import FreezableProxy, wait_until

from guard.cli.main import main as guard_main

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


class Guard:
    """A guard configuration for the test's stack, runnable in-process (--once) or as a daemon."""

    def __init__(self, ms, tmp: Path, smtp_port: int | None = None, **daemon) -> None:
        self.ms = ms
        self.tmp = tmp
        self.journal = tmp / "journal.sqlite3"
        self.log = tmp / "guard.log"
        pw = tmp / "imap-password"
        pw.write_text("secret\n")
        extra = "".join(f"{k} = {v}\n" for k, v in daemon.items())
        self.config = tmp / "guard.toml"
        self.config.write_text(f"""
{INSTITUTE_TOML}
[imap]
host = "127.0.0.1"
port = {ms.imap_port}
tls = "starttls"
ca_file = "{ms.ca_cert}"
username = "{EVENTS}"
password_file = "{pw}"
idle_seconds = 30
reconnect_initial_seconds = 0.5
reconnect_max_seconds = 2
timeout_seconds = 10

[smtp]
host = "127.0.0.1"
port = {smtp_port or ms.smtp_port}
tls = "none"
retry_initial_seconds = 1
retry_max_seconds = 2

[daemon]
journal = "{self.journal}"
max_replies_per_hour = 10000
trusted_authserv_ids = ["mx.crm.cat"]
{extra}
[rules]
shipped_dir = "{HERE / 'daemon_rules'}"
local_dir = "{tmp / 'no-local-rules'}"
""")
        self.proc: subprocess.Popen | None = None

    # -- in-process ------------------------------------------------------------------
    def once(self, *flags: str) -> None:
        assert guard_main(["--config", str(self.config), "run", "--once", "--no-model", *flags]) == 0

    # -- as a daemon -----------------------------------------------------------------
    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "guard", "--config", str(self.config), "run", "--no-model"],
                                     cwd=REPO, env=env, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def wait_log(self, text: str, timeout: float = 20, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and self.log.read_text(errors="replace").count(text) >= count:
                return
            assert self.proc is None or self.proc.poll() is None, f"guard exited:\n{self.log.read_text()}"
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the log after {timeout}s:\n{self.log.read_text()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self._logf.close()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        finally:
            self.proc = None
            self._logf.close()
        return rc

    def done(self) -> int:
        if not self.journal.exists():
            return 0
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM messages WHERE state='done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def wait_done(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.done() < n:
            assert time.monotonic() < deadline, f"{self.done()} of {n} done:\n{self.log.read_text()}"
            assert self.proc is None or self.proc.poll() is None, f"guard exited:\n{self.log.read_text()}"
            time.sleep(0.05)

    def cleanup(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self._logf.close()
            self.proc = None


@pytest.fixture
def guard(clean_mailstack, tmp_path):
    g = Guard(clean_mailstack, tmp_path)
    yield g
    g.cleanup()


@pytest.fixture
def slow_smtp_guard(clean_mailstack, tmp_path):
    """A guard whose SMTP goes through a proxy that holds each server answer 10 ms (a slow server,
    about 40 ms a send; nothing lost or reordered)."""
    proxy = FreezableProxy(clean_mailstack.smtp_port, reply_delay=0.01)
    g = Guard(clean_mailstack, tmp_path, smtp_port=proxy.port)
    yield g
    g.cleanup()
    proxy.close()


def sent_by_guard(ms, since: int):
    """Messages guard handed to SMTP after the sink held ``since`` messages."""
    return [m for m in ms.sink()[since:] if b"X-Guard-Loop: events@crm.cat" in m.raw]


# ---------------------------------------------------------------------------------------


def test_scam_is_quarantined_and_nothing_is_sent(guard):
    ms = guard.ms
    guard.once()  # the first start: mail arriving from now on is new mail
    ms.send(scam(), SCAMMER, [EVENTS])
    before = len(ms.sink())
    guard.once()
    assert ms.fetch_all(EVENTS) == []
    (quarantined,) = ms.fetch_all(EVENTS, "Guard/Quarantine")
    assert b"7 rooms left" in quarantined
    assert ms.sink()[before:] == []  # nothing at all went out
    for folder in ("Guard/Quarantine", "Guard/Review", "Guard/Routed", "Guard/Automated", "Guard/NotScam",
                   "Guard/Scam"):
        assert folder in ms.folders(EVENTS)


def test_inquiry_reaches_the_coordinator_and_is_acknowledged(guard):
    ms = guard.ms
    guard.once()
    raw = inquiry()
    mid = parsed(raw)["Message-ID"]
    ms.send(raw, PARTICIPANT, [EVENTS])
    guard.once()
    assert ms.fetch_all(EVENTS) == [] and len(ms.fetch_all(EVENTS, "Guard/Routed")) == 1
    (fwd_raw,) = ms.fetch_all(COORDINATOR)
    fwd = parsed(fwd_raw)
    assert fwd["Reply-To"].addresses[0].addr_spec == PARTICIPANT
    assert "[guard] inquiry: Invitation letter for my visa" in fwd["Subject"]
    (original,) = [p for p in fwd.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert original.get_content()["Message-ID"] == mid
    assert "Verdict: inquiry" in fwd.get_body(("plain",)).get_content()
    (ack_raw,) = ms.fetch_all(PARTICIPANT)
    ack = parsed(ack_raw)
    assert ack["Auto-Submitted"] == "auto-replied" and ack["In-Reply-To"] == mid
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert "never ask you for credit card or bank details" in ack.get_body(("plain",)).get_content()
    (ack_env,) = [m for m in ms.sink() if m.envelope_tos == [PARTICIPANT]]
    assert ack_env.envelope_from == ""  # null envelope sender: no bounce can come back to the inbox


def test_report_gets_a_verdict_reply_to_the_reporter_only(guard):
    ms = guard.ms
    guard.once()
    ms.send(report("alice@example.org"), "alice@example.org", [EVENTS])
    before = len(ms.sink())
    guard.once()
    out = sent_by_guard(ms, before)
    assert [m.envelope_tos for m in out] == [["alice@example.org"]]
    reply = parsed(out[0].raw)
    assert reply["To"].addresses[0].addr_spec == "alice@example.org"
    text = reply.get_body(("plain",)).get_content()
    assert "This message is a scam" in text and "code of conduct" in text
    assert all(SCAMMER not in m.envelope_tos for m in ms.sink())
    assert len(ms.fetch_all("alice@example.org")) == 1
    assert ms.fetch_all(COORDINATOR) == []
    assert len(ms.fetch_all(EVENTS, "Guard/Routed")) == 1


def test_paid_report_alerts_the_coordinator_and_tells_the_reporter_to_call_the_bank(guard):
    ms = guard.ms
    guard.once()
    ms.send(report("bob@example.org", paid=True), "bob@example.org", [EVENTS])
    guard.once()
    (alert,) = ms.fetch_all(COORDINATOR)
    assert b"URGENT" in alert
    (reply,) = ms.fetch_all("bob@example.org")
    assert "contact your bank" in parsed(reply)["Subject"]
    (filed,) = ms.fetch(EVENTS, "Guard/Review")
    assert b"\\Flagged" in filed.flags


def test_bounce_and_out_of_office_get_no_reply(guard):
    ms = guard.ms
    guard.once()
    ms.send(bounce(inquiry()), "", [EVENTS])
    ms.send(out_of_office(), "bob@example.org", [EVENTS])
    before = len(ms.sink())
    guard.once()
    assert ms.sink()[before:] == []
    assert ms.fetch_all(EVENTS) == [] and len(ms.fetch_all(EVENTS, "Guard/Automated")) == 2
    assert ms.fetch_all("bob@example.org") == []


def test_backlog_present_at_first_start_is_filed_but_never_answered(guard):
    ms = guard.ms
    ms.send(inquiry(), PARTICIPANT, [EVENTS])  # already there before guard ever ran
    time.sleep(1.1)  # INTERNALDATE has one-second resolution
    guard.once()
    assert len(ms.fetch_all(COORDINATOR)) == 1  # routed
    assert ms.fetch_all(PARTICIPANT) == []  # but no automatic reply to old mail


def test_dry_run_sends_and_moves_nothing(guard):
    ms = guard.ms
    guard.once()
    ms.send(scam(), SCAMMER, [EVENTS])
    ms.send(inquiry(), PARTICIPANT, [EVENTS])
    before = len(ms.sink())
    guard.once("--dry-run")
    assert len(ms.fetch_all(EVENTS)) == 2 and ms.sink()[before:] == []
    guard.once()  # the dry run left no trace in the real journal
    assert ms.fetch_all(EVENTS) == [] and len(ms.fetch_all(COORDINATOR)) == 1


def test_smtp_outage_is_retried_without_duplicates(guard):
    ms = guard.ms
    guard.once()
    ms.send(inquiry(), PARTICIPANT, [EVENTS])
    ms.stop_smtp()
    try:
        guard.once()
    finally:
        ms.start_smtp()
    assert len(ms.fetch_all(EVENTS)) == 1  # waits in the inbox until its sends went out
    time.sleep(1.2)  # retry_initial_seconds = 1 (with jitter: 0.5-1 s)
    guard.once()
    guard.once()
    assert ms.fetch_all(EVENTS) == []
    assert len(ms.fetch_all(COORDINATOR)) == 1 and len(ms.fetch_all(PARTICIPANT)) == 1


def test_permanent_smtp_refusal_is_surfaced_and_the_message_filed_for_review(guard, caplog):
    ms = guard.ms
    guard.once()
    ms.send(inquiry(), PARTICIPANT, [EVENTS])
    ms.smtp_fail("550 5.7.1 relaying denied", stage="rcpt", times=1)  # refuses the forward, once
    guard.once()
    assert ms.fetch_all(COORDINATOR) == [] and len(ms.fetch_all(PARTICIPANT)) == 1
    (filed,) = ms.fetch(EVENTS, "Guard/Review")
    assert b"\\Flagged" in filed.flags
    db = sqlite3.connect(guard.journal)
    (state, error), = db.execute("SELECT state, last_error FROM outbox WHERE kind='forward'").fetchall()
    db.close()
    assert state == "failed" and "550" in error
    assert any("permanent failure" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_untrusted_certificate_is_refused(guard, caplog):
    cfg = guard.config.read_text().replace(f'ca_file = "{guard.ms.ca_cert}"\n', "")
    guard.config.write_text(cfg)
    assert guard_main(["--config", str(guard.config), "run", "--once", "--no-model"]) == 1
    assert any("certificate" in r.getMessage() for r in caplog.records)


def test_kill_9_mid_batch_then_restart_misses_nothing_and_never_sends_a_second_reply(slow_smtp_guard):
    # a slow SMTP server: at full speed guard may finish all 80 sends between two looks at the sink
    guard = slow_smtp_guard
    ms = guard.ms
    n = 40
    guard.once()
    ids = []
    for i in range(n):
        raw = inquiry(sender=f"p{i}@example.net", name=f"P {i}")
        ids.append(parsed(raw)["Message-ID"])
        ms.send(raw, f"p{i}@example.net", [EVENTS])
    before = len(ms.sink())
    guard.start()
    # kill while the batch's replies and forwards are going out (some sent, the batch not filed)
    wait_until(lambda: len(ms.sink()) >= before + 12, timeout=30, what="a dozen sends")
    guard.kill9()
    at_kill = guard.done()
    assert at_kill < n, "the batch finished before the kill: not a mid-batch crash"
    guard.start()
    guard.wait_done(n, timeout=60)
    assert guard.stop() == 0
    assert ms.fetch_all(EVENTS) == [] and len(ms.fetch_all(EVENTS, "Guard/Routed")) == n
    out = sent_by_guard(ms, before)
    acks: dict[str, list[str]] = {}
    for m in out:
        if m.envelope_from == "":
            acks.setdefault(m.envelope_tos[0], []).append(parsed(m.raw)["Message-ID"])
    assert sorted(acks) == sorted(f"p{i}@example.net" for i in range(n))  # none missed
    forwarded: dict[str, list[str]] = {}
    for raw in ms.fetch_all(COORDINATOR):
        m = parsed(raw)
        (orig,) = [p for p in m.iter_attachments() if p.get_content_type() == "message/rfc822"]
        forwarded.setdefault(orig.get_content()["Message-ID"], []).append(m["Message-ID"])
    assert sorted(forwarded) == sorted(ids)  # every inquiry routed, none missed
    # never sent twice: a send caught at its commit point is taken as sent (guard/daemon/journal.py)
    repeats = [v for v in (*acks.values(), *forwarded.values()) if len(v) > 1]
    assert repeats == []


def test_dovecot_restart_while_idle_reconnects_and_processes_new_mail(guard):
    ms = guard.ms
    guard.start()
    guard.wait_log("IDLE)")  # connected, mailbox selected, IDLE offered
    time.sleep(0.3)  # inside IDLE now
    # A real restart (systemctl) ends every IMAP session; this private instance only stops its
    # master, so end guard's session the way Dovecot's shutdown does, then restart.
    subprocess.run(["doveadm", "-c", str(ms.mail_dir / "dovecot" / "dovecot.conf"), "kick", EVENTS],
                   check=True, capture_output=True, env=dict(os.environ, PATH=os.environ["PATH"] + ":/usr/sbin"))
    ms.restart_dovecot()
    raw = inquiry()
    ms.send(raw, PARTICIPANT, [EVENTS])  # arrives while guard is reconnecting (backoff 0.25-2 s)
    guard.wait_done(1, timeout=30)
    guard.wait_log("reconnected after")
    assert guard.stop() == 0
    assert ms.fetch_all(EVENTS) == [] and len(ms.fetch_all(PARTICIPANT)) == 1
    assert len(ms.fetch_all(COORDINATOR)) == 1


def test_daemon_answers_within_seconds_over_idle_and_stops_on_sigterm(guard):
    ms = guard.ms
    guard.start()
    guard.wait_log("IDLE)")
    time.sleep(0.3)
    t0 = time.monotonic()
    ms.send(inquiry(), PARTICIPANT, [EVENTS])
    ms.wait_for_messages(PARTICIPANT, 1, timeout=10)
    assert time.monotonic() - t0 < 5
    t1 = time.monotonic()
    assert guard.stop() == 0
    assert time.monotonic() - t1 < 5
    assert "SIGTERM received" in guard.log.read_text()
