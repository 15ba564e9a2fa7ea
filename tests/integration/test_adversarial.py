"""Issue 13 (adversarial mail) through the real daemon on the private Dovecot + SMTP stack:

- a message past its time budget is killed in its worker, filed for review as poison, and the mail
  after it is handled; /healthz answers (and is healthy) throughout;
- a lost journal beside guard's folders on the server refuses to start unless --new-journal;
- an SMTP server whose TLS certificate does not verify is a permanent failure: no retries, the
  message goes to Review.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import urllib.error
import urllib.request

import pytest
from harness import HERE, GuardProc, deliver, make_message, wait_until


@pytest.fixture
def cleanup():
    procs = []
    yield procs.append
    for p in procs:
        p.cleanup()


def _journal(g: GuardProc, sql: str, args=()):
    db = sqlite3.connect(f"file:{g.journal}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SLOW_RULE = """
[[rule]]
id = "T_PATHOLOGICAL"
description = "A pattern that backtracks exponentially (the time budget's test rule)"
score = 0.5
tags = ["scam"]
[rule.match]
type = "header"
name = "X-Slow"
pattern = '^(a|aa)+$'
[rule.examples]
match = ["X-Slow: aaaa\\nSubject: x\\n\\nhello"]
no_match = ["Subject: x\\n\\nHello"]
"""


def test_a_hanging_message_is_poison_at_its_budget_and_the_rest_goes_on(clean_mailstack, tmp_path, cleanup):
    """Through the real daemon: a message that would hold the classifier for hours (a header that makes
    a rule's pattern backtrack exponentially) is killed in its worker at the budget, filed in Review
    flagged as poison with the reason, and the inquiry after it is handled; /healthz answers 200
    throughout (before: the daemon hung on it for good, and again after every restart)."""
    ms = clean_mailstack
    rules = tmp_path / "rules"
    shutil.copytree(HERE / "daemon_rules", rules)
    (rules / "pathological.toml").write_text(SLOW_RULE)
    g = GuardProc(ms, tmp_path / "g", daemon={"message_time_budget_seconds": 2})
    cleanup(g)
    g.config.write_text(g.config.read_text().replace(str(HERE / "daemon_rules"), str(rules))
                        + "\n[health]\nenabled = true\nport = 0\n")
    assert g.once() == 0
    g.start()
    g.wait_log("IDLE)")
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/healthz", g.log_text()[g._offset:]).group(1))
    hang = ("From: Desk <desk@stays.example>\r\nTo: events@crm.cat\r\nSubject: rooms\r\n"
            "X-Slow: " + "a" * 60 + "!\r\nMessage-ID: <hang.1@stays.example>\r\n"
            "Date: Mon, 05 Jan 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
            "Hello\r\n").encode()
    mid, inquiry = make_message("inquiry", 1, tag="budget")
    deliver(ms, [hang, inquiry])
    answers = []

    def settled() -> bool:
        answers.append(_healthz(port))  # the event loop is free: /healthz answers within its timeout
        c = g.journal_counts()
        return c.get("poison", 0) + c.get("done", 0) == 2 and not c.get("outbox_pending")

    wait_until(settled, timeout=90, what=f"both messages handled\n{g.tail()}")
    assert g.stop() == 0
    rows = _journal(g, "SELECT message_id, state, folder, note FROM messages ORDER BY uid")
    assert rows[0][1:] == ("poison", "Guard/Review", "time budget exceeded (2 s)"), rows
    assert rows[1][:3] == (mid, "done", "Guard/Routed"), rows
    review = ms.fetch("events@crm.cat", "Guard/Review")
    assert len(review) == 1 and b"\\Flagged" in review[0].flags and b"hang.1@stays.example" in review[0].raw
    assert answers and [c for c, _ in answers] == [200] * len(answers), answers


def test_a_lost_journal_beside_guard_folders_needs_new_journal(clean_mailstack, tmp_path, cleanup):
    ms = clean_mailstack
    g = GuardProc(ms, tmp_path)
    cleanup(g)
    assert g.once() == 0  # the first start: guard creates its folders
    for suffix in ("", "-wal", "-shm"):
        p = g.journal.with_name(g.journal.name + suffix)
        if p.exists():
            p.unlink()
    assert g.once() == 2
    log = g.log_text()
    assert f"{g.journal}: the journal is new or empty, but the IMAP account events@crm.cat already has " \
           "guard's folders (Guard/Quarantine" in log
    assert "Traceback" not in log
    assert g.once() == 2  # the refused start left an empty journal: still refused
    g.journal.write_bytes(b"")  # a zeroed-out (0-byte) journal is a missing one
    assert g.once() == 2
    assert g.once("--new-journal") == 0
    assert g.once() == 0  # from now on the journal is this one


def test_an_untrusted_smtp_certificate_is_permanent_not_retried(clean_mailstack, tmp_path, cleanup):
    ms = clean_mailstack
    g = GuardProc(ms, tmp_path, smtp={"max_attempts": 20})
    cleanup(g)
    # SMTPS to a TLS port whose certificate (Dovecot's self-signed one) this client does not trust
    g.config.write_text(g.config.read_text().replace(f'port = {ms.smtp_port}\ntls = "none"',
                                                     f'port = {ms.imaps_port}\ntls = "ssl"'))
    assert g.once() == 0
    mid, inquiry = make_message("inquiry", 1, tag="tls")
    deliver(ms, [inquiry])
    assert g.once() == 0
    rows = _journal(g, "SELECT o.kind, o.state, o.attempts, o.last_error FROM outbox o ORDER BY o.id")
    forwards = [r for r in rows if r[0] == "forward"]
    assert forwards and all(state == "failed" and attempts == 1 for _, state, attempts, _ in forwards), rows
    assert all("certificate not trusted" in (err or "") for *_, err in forwards), rows
    [(state, folder)] = _journal(g, "SELECT state, folder FROM messages WHERE message_id=?", (mid,))
    assert (state, folder) == ("done", "Guard/Review")
    assert len(ms.fetch("events@crm.cat", "Guard/Review")) == 1
    assert "permanent failure: SMTP TLS" in g.log_text()
