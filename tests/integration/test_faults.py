"""Server faults under a running `guard run`, each survived with nothing lost and nothing sent twice.

- Dovecot restarted while guard is in IDLE (and mail arriving around it);
- the SMTP server down for a while, then back (10 s in CI, 60 s with GUARD_FULL=1);
- the IMAP connection silently blackholed: a TCP proxy between guard and Dovecot stops forwarding
  without closing anything, in IDLE and in the middle of a batch (guard's timeouts set short);
- a UIDVALIDITY reset of the inbox with messages still in it, some with sends pending.

Every test ends with the harness's exactly-once accounting in the SMTP sink and the folders.
"""

from __future__ import annotations

import threading
import time

import pytest
from harness import (
    EVENTS,
    FreezableProxy,
    GuardProc,
    MessageMix,
    account,
    deliver,
    doveadm,
    full,
    inbox_count,
    wait_until,
)


@pytest.fixture
def cleanup():
    procs = []
    yield procs.append
    for p in procs:
        p.cleanup()


def test_dovecot_restart_during_idle(clean_mailstack, tmp_path, cleanup):
    ms = clean_mailstack
    g = GuardProc(ms, tmp_path)
    cleanup(g)
    assert g.once() == 0
    mix = MessageMix(seed=11, tag="dr")
    since = len(ms.sink())
    g.start()
    g.wait_log("IDLE)")
    deliver(ms, mix.take(10))
    g.wait_settled(ms, 10, timeout=60)
    for round_ in range(2):
        time.sleep(0.5)  # in IDLE
        # a real restart ends every IMAP session; this private instance only stops its master
        doveadm(ms, "kick", EVENTS)
        ms.restart_dovecot()
        deliver(ms, mix.take(10))  # arrives while guard reconnects
        g.wait_settled(ms, 20 + 10 * round_, timeout=90)
    g.wait_log("reconnected after")
    assert g.stop() == 0
    report = account(ms, mix.expected, since=since)
    report.assert_exactly_once()
    assert report.resent == 0


def test_smtp_down_then_back(clean_mailstack, tmp_path, cleanup):
    ms = clean_mailstack
    outage = 60.0 if full() else 10.0
    g = GuardProc(ms, tmp_path)
    cleanup(g)
    assert g.once() == 0
    mix = MessageMix(seed=12, tag="sd")
    since = len(ms.sink())
    g.start()
    g.wait_log("IDLE)")
    deliver(ms, mix.take(6))
    g.wait_settled(ms, 6, timeout=60)
    ms.stop_smtp()
    t_down = time.monotonic()
    try:
        deliver(ms, mix.take(12), rate=12 / (outage * 0.6))  # arriving during the outage
        with_sends = sum(1 for k in list(mix.expected.values())[6:] if k in ("inquiry", "report", "report_paid"))
        time.sleep(max(0.0, outage - (time.monotonic() - t_down)))
        # what needs sending waits in the inbox, nothing was lost, guard is still up
        assert g.proc.poll() is None
        assert inbox_count(ms) == with_sends
    finally:
        ms.start_smtp()
    deliver(ms, mix.take(6))
    g.wait_settled(ms, 24, timeout=60)
    assert g.stop() == 0
    report = account(ms, mix.expected, since=since)
    report.assert_exactly_once()
    assert report.resent == 0
    assert "retry" in g.log_text()


def test_imap_connection_blackholed(clean_mailstack, tmp_path, cleanup):
    ms = clean_mailstack
    proxy = FreezableProxy(ms.imap_port)
    try:
        g = GuardProc(ms, tmp_path, imap_port=proxy.port,
                      imap=dict(idle_seconds=5, timeout_seconds=2, reconnect_initial_seconds=0.2,
                                reconnect_max_seconds=1))
        cleanup(g)
        assert g.once() == 0
        mix = MessageMix(seed=13, tag="bh")
        since = len(ms.sink())
        g.start()
        g.wait_log("IDLE)")
        time.sleep(0.5)
        # 1. in IDLE: the socket goes silent; new mail must still be found
        assert proxy.freeze() >= 1
        t0 = time.monotonic()
        deliver(ms, mix.take(5))
        g.wait_settled(ms, 5, timeout=30)
        recovered = time.monotonic() - t0
        assert recovered < 25, recovered
        # 2. in the middle of a batch
        batch = mix.take(40)
        feeder = threading.Thread(target=deliver, args=(ms, batch), daemon=True)
        feeder.start()
        deadline = time.monotonic() + 30
        while g.journal_counts().get("done", 0) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.freeze() >= 1
        feeder.join(60)
        g.wait_settled(ms, 45, timeout=60)
        # the frozen socket is noticed even when the batch was already done (then in IDLE)
        wait_until(lambda: g.log_text().count("reconnected after") >= 2, timeout=30, what="second reconnect")
        assert g.stop() == 0
        report = account(ms, mix.expected, since=since)
        report.assert_exactly_once()
        assert report.resent == 0
    finally:
        proxy.close()


def test_uidvalidity_reset_with_messages_in_the_inbox(clean_mailstack, tmp_path, cleanup):
    ms = clean_mailstack
    g = GuardProc(ms, tmp_path)
    cleanup(g)
    assert g.once() == 0
    mix = MessageMix(seed=14, tag="uv", weights={"inquiry": 2, "report": 1, "scam": 1, "ooo": 1})
    since = len(ms.sink())
    g.start()
    g.wait_log("IDLE)")
    deliver(ms, mix.take(8))
    g.wait_settled(ms, 8, timeout=60)
    with ms.imap(EVENTS) as c:
        old = c.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
    # sends of the next messages cannot go out: they are decided and wait in the inbox
    ms.stop_smtp()
    try:
        deliver(ms, mix.take(8))
        deadline = time.monotonic() + 30
        while g.journal_counts().get("decided", 0) + g.journal_counts().get("done", 0) < 16:
            assert time.monotonic() < deadline, g.journal_counts()
            time.sleep(0.1)
        pending = inbox_count(ms)
        assert pending > 0
        # the reset: same messages, new UIDVALIDITY; guard's session is ended so it sees it
        doveadm(ms, "mailbox", "update", "-u", EVENTS, "--uid-validity", str(old + 1000), "INBOX")
        doveadm(ms, "kick", EVENTS)
    finally:
        ms.start_smtp()
    g.wait_log("UIDVALIDITY of INBOX changed", timeout=30)
    with ms.imap(EVENTS) as c:
        assert c.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] == old + 1000
    time.sleep(1.1)  # INTERNALDATE has one-second resolution: what follows arrived after the reset
    deliver(ms, mix.take(8))
    g.wait_settled(ms, 24, timeout=90)
    assert g.stop() == 0
    report = account(ms, mix.expected, since=since)
    report.assert_exactly_once()
    assert report.resent == 0
