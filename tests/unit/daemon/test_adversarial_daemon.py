"""Issue 13 (adversarial mail), the daemon's part: bounded work per message, the ledger before
parsing, duplicates by Message-ID *and* content, outbox bodies purged, card numbers masked in the
journal, a damaged journal refused, malformed mail flagged. (Sending over SMTP and the real IMAP
folders: tests/integration/test_adversarial.py.)"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_fakes import Clock, Crash, FakeMailbox, FakeMailer, StubClassifier, mail
from test_executor import COORD, PAT, make, world  # noqa: F401 - world is a fixture

from guard.daemon.budget import ProcessAnalyser
from guard.daemon.health import Health, instrument
from guard.daemon.journal import Journal
from guard.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CARD = "4111 1111 1111 1111"


def run(coro):
    return asyncio.run(coro)


class HangingClassifier(StubClassifier):
    """Backtracks exponentially (a pure C regex loop, uninterruptible in a thread) on X-Test-Category: hang."""

    def classify(self, msg):
        if (msg.header("X-Test-Category") or "").strip() == "hang":
            re.match(r"(a+)+$", "a" * 40 + "!")  # ~2^40 steps: hours
        return super().classify(msg)


class CrashingAnalyser:
    """Stands for guard dying (kill -9, an OOM kill) while it reads the message with UID ``uid``."""

    def __init__(self, uid_marker: str, inner) -> None:
        self.marker, self.inner = uid_marker.encode(), inner
        self.budget_seconds = None

    async def analyse(self, raw, classifier):
        if self.marker in raw:
            raise Crash()
        return await self.inner.analyse(raw, classifier)

    async def close(self):
        pass


# -- the ledger before parsing; poison; never blocking the rest ------------------------------------


def test_a_crash_while_reading_costs_one_attempt_then_poison_and_the_rest_goes_on(world):
    clock, journal, mb, mailer, ex = world
    bad = mb.deliver(mail(mid="<bad@example.org>", subject="killer"), clock())
    good = mb.deliver(mail(mid="<good@example.org>", sender="Ann <ann@example.org>"), clock())
    for attempt in (1, 2, 3):
        ex2 = make(journal, mb, mailer, clock)
        ex2.analyser = CrashingAnalyser("<bad@example.org>", ex2.analyser)
        with pytest.raises(Crash):
            run(ex2.reconcile())
        # committed before the message was read: the crash is counted
        assert journal.get(ex2.key(bad)).attempts == attempt
    ex3 = make(journal, mb, mailer, clock)
    ex3.analyser = CrashingAnalyser("<bad@example.org>", ex3.analyser)
    run(ex3.reconcile())  # the fourth start: poison without reading it again, then the good one
    row = journal.get(ex3.key(bad))
    assert row.state == "poison" and "processing failed 3 times" in row.note
    assert bad in mb.flagged and len(mb.folders["Guard/Review"]) == 1
    assert journal.get(ex3.key(good)).state == "done"
    assert [r for _, r, _ in mailer.sent] == [[COORD], ["ann@example.org"]]


def test_a_message_past_its_time_budget_is_poison_and_the_next_goes_on(world):
    """The real worker process: the hanging message is killed at its budget, the event loop stays
    free meanwhile, and the next message is decided by a new worker."""
    clock, journal, mb, mailer, ex = world
    ex.classifier = HangingClassifier()
    ex.analyser = ProcessAnalyser(budget_seconds=1.0)
    slow = mb.deliver(mail(category="hang", mid="<hang@example.org>", subject=f"card {CARD}"), clock())
    fine = mb.deliver(mail(mid="<fine@example.org>"), clock())
    ticks = []

    async def main():
        async def ticker():
            while True:
                ticks.append(asyncio.get_running_loop().time())
                await asyncio.sleep(0.05)

        t = asyncio.create_task(ticker())
        try:
            return await ex.reconcile()
        finally:
            t.cancel()
            await ex.analyser.close()

    run(main())
    row = journal.get(ex.key(slow))
    assert row.state == "poison" and row.note == "time budget exceeded (1 s)"
    assert slow in mb.flagged and len(mb.folders["Guard/Review"]) == 1
    assert journal.get(ex.key(fine)).state == "done"
    assert [r for _, r, _ in mailer.sent] == [[COORD], [PAT]]
    assert ex.analyser.starts == 2  # the hung worker was killed, a new one read the next message
    # the loop was never blocked for long while the worker hung (it ticks every 50 ms)
    assert len(ticks) >= 10 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5


def test_an_error_in_the_worker_is_retried_then_poison(world):
    clock, journal, mb, mailer, ex = world
    ex.classifier = StubClassifier(fail_on={"inquiry"})
    ex.analyser = ProcessAnalyser(budget_seconds=30)
    uid = mb.deliver(mail(), clock())
    try:
        for _ in range(3):
            run(ex.reconcile())
    finally:
        run(ex.analyser.close())
    row = journal.get(ex.key(uid))
    assert row.state == "poison" and row.error == "RuntimeError while deciding" and mailer.sent == []


def test_healthz_reports_a_stuck_watcher():
    now = [1000.0]
    h = Health(stale_seconds=600, stuck_seconds=60, clock=lambda: now[0])
    h.connected("events")
    h.busy("events")
    now[0] += 59
    assert h.problems() == []
    h.progressed("events")  # a message moved on
    now[0] += 59
    assert h.problems() == []
    now[0] += 2
    [problem] = h.problems()
    assert problem.startswith("events: watcher stuck") and "61 s" in problem
    h.idle("events")  # the batch ended: nothing in hand
    assert h.problems() == []


def test_instrument_marks_work_in_hand_and_progress(world):
    clock, journal, mb, mailer, ex = world
    now = [0.0]
    h = Health(stuck_seconds=60, clock=lambda: now[0])
    h.connected(mb.account)
    seen = []
    inner = ex.process_batch

    async def watched(uids, **kwargs):
        seen.append(h.accounts[mb.account].busy_since)
        return await inner(uids, **kwargs)

    ex.process_batch = watched
    instrument(ex, health=h)
    mb.deliver(mail(), clock())
    run(ex.reconcile())
    assert seen == [0.0] and h.accounts[mb.account].busy_since is None
    assert h.accounts[mb.account].last_progress is not None


# -- duplicates by Message-ID and content ------------------------------------------------------


def test_a_scam_reusing_an_earlier_message_id_is_classified(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(mid="<m1@example.org>"), clock())
    run(ex.reconcile())
    scam = mb.deliver(mail(mid="<m1@example.org>", category="scam", sender="Desk <desk@stays.example>",
                           subject="Your hotel", body="Pay the room block by card."), clock())
    run(ex.reconcile())
    row = journal.get(ex.key(scam))
    assert row.category == "scam" and row.folder == "Guard/Quarantine"
    assert len(mb.folders["Guard/Quarantine"]) == 1


def test_the_same_message_twice_is_still_a_duplicate(world):
    clock, journal, mb, mailer, ex = world
    raw = mail()
    mb.deliver(raw, clock())
    run(ex.reconcile())
    again = mb.deliver(b"Received: from mx2.example by mx.crm.cat\r\n" + raw, clock())  # another route
    run(ex.reconcile())
    assert len(mailer.sent) == 2
    assert "duplicate" in journal.get(ex.key(again)).note


# -- the outbox ------------------------------------------------------------------------------


def _outbox_sizes(journal):
    return [r[0] for r in journal.db.execute("SELECT length(raw) FROM outbox ORDER BY id")]


def test_sent_bodies_are_purged_on_confirmation(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(body=f"my card is {CARD}"), clock())
    run(ex.reconcile())
    assert len(mailer.sent) == 2 and _outbox_sizes(journal) == [0, 0]
    assert journal.counts()["outbox.sent"] == 2


def test_sent_bodies_are_kept_for_the_retention_then_purged(tmp_path):
    clock, journal, mb, mailer = Clock(), Journal(tmp_path / "j.sqlite3"), FakeMailbox(), FakeMailer()
    ex = make(journal, mb, mailer, clock)
    ex.outbox_retention_days = 2
    clock.advance(minutes=1)
    mb.deliver(mail(), clock())
    run(ex.reconcile())
    assert all(n > 100 for n in _outbox_sizes(journal))
    clock.advance(days=1)
    run(ex.reconcile())
    assert all(n > 100 for n in _outbox_sizes(journal))
    clock.advance(days=1, minutes=1)
    run(ex.reconcile())
    assert _outbox_sizes(journal) == [0, 0]


def test_a_pending_send_keeps_its_body(world):
    from guard.errors import TransientIOError

    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    mailer.failures = [TransientIOError("451")]
    run(ex.reconcile())
    sizes = dict(journal.db.execute("SELECT state, length(raw) FROM outbox").fetchall())
    assert sizes["sent"] == 0 and sizes["intent"] > 100


# -- card numbers in the journal ---------------------------------------------------------------


def test_card_numbers_are_masked_before_the_journal_stores_them(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(subject=f"I paid with {CARD}, is that right?", mid=f"<{CARD.replace(' ', '')}@x.example>"),
               clock())
    run(ex.reconcile())
    dump = "\n".join(journal.db.iterdump())
    for r in journal.db.execute("SELECT raw FROM outbox"):
        assert bytes(r[0]) == b""  # the forward's body (the whole original) is gone too
    assert "4111 1111 1111 1111" not in dump and "4111111111111111 " not in dump
    subject = journal.db.execute("SELECT subject FROM message_facts").fetchone()[0]
    assert subject == "I paid with **** **** **** 1111, is that right?"


def test_the_poison_note_of_an_unreadable_message_masks_card_numbers(world):
    clock, journal, mb, mailer, ex = world
    ex.classifier = HangingClassifier()
    ex.analyser = ProcessAnalyser(budget_seconds=0.5)
    mb.deliver(mail(category="hang", subject=f"card {CARD}"), clock())
    try:
        [out] = run(ex.process_batch([1])).values()
    finally:
        run(ex.analyser.close())
    assert out.state == "poison" and out.subject == "card **** **** **** 1111"


# -- malformed mail -----------------------------------------------------------------------------


def test_malformed_mail_left_in_the_inbox_is_flagged(world):
    clock, journal, mb, mailer, ex = world
    raw = mail(category="other").replace(b"From: Pat Participant <pat@example.org>\r\n", b"")
    uid = mb.deliver(raw, clock())
    clean = mb.deliver(mail(category="other", mid="<clean@example.org>", subject="Hi"), clock())
    run(ex.reconcile())
    assert uid in mb.messages and uid in mb.flagged  # left in place, flagged
    assert clean in mb.messages and clean not in mb.flagged
    assert "malformed message (missing From header)" in journal.get(ex.key(uid)).note


# -- a damaged journal --------------------------------------------------------------------------


def _journal_with_rows(path: Path, n: int = 300) -> None:
    j = Journal(path)
    with j.transaction():
        for i in range(n):
            j.db.execute("INSERT INTO messages (account, mailbox, uidvalidity, uid, state, note, created, updated) "
                         "VALUES ('a', 'INBOX', 1, ?, 'done', ?, 0, 0)", (i, "x" * 200))
    j.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    j.close()


@pytest.mark.parametrize("damage", ["half", "zeroed"])
def test_a_damaged_journal_is_refused_with_the_file_the_problem_and_recovery(tmp_path, damage):
    path = tmp_path / "journal.sqlite3"
    _journal_with_rows(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "half" else bytes(len(data)))
    with pytest.raises(ConfigError) as err:
        Journal(path)
    text = str(err.value)
    assert text.startswith(f"{path}: the journal is damaged (")
    assert "restore the latest backup" in text and "--new-journal" in text


def test_guard_run_with_a_damaged_journal_exits_with_a_message_not_a_traceback(tmp_path):
    path = tmp_path / "journal.sqlite3"
    _journal_with_rows(path)
    path.write_bytes(path.read_bytes()[:4096 * 3])
    config = tmp_path / "guard.toml"
    base = (REPO / "guard" / "defaults.toml").read_text()
    config.write_text(base + f"""
[imap]
host = "127.0.0.1"
port = 1
tls = "none"
username = "events@crm.cat"
password = "x"
[smtp]
host = "127.0.0.1"
port = 1
tls = "none"
""" + ("" if "[daemon]" in base else "[daemon]\n") + "")
    text = config.read_text()
    if "[daemon]" in base:
        text = re.sub(r"(?m)^\[daemon\]\n", f'[daemon]\njournal = "{path}"\n', text, count=1)
    else:
        text = text.replace("[daemon]\n", f'[daemon]\njournal = "{path}"\n')
    config.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "guard", "--config", str(config), "run", "--once", "--no-model"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{path}: the journal is damaged" in proc.stderr, proc.stderr


def test_an_empty_journal_file_is_a_new_journal(tmp_path):
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"")
    j = Journal(path)
    assert j.is_empty()
    j.close()
