"""The executor with fake mailbox, mailer and clock: order of effects, crash safety, retries, poison."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy

import pytest
from daemon_fakes import (
    Clock,
    Crash,
    FakeMailbox,
    FakeMailer,
    PermanentIOError,
    StubClassifier,
    TransientIOError,
    mail,
)

from guard.daemon.service import build_env, load_policy_and_templates
from guard.daemon.executor import Executor, RetryPolicy
from guard.daemon.journal import Journal
from guard.settings import load_settings

COORD = "nhernandez@crm.cat"
PAT = "pat@example.org"


def make(journal, mailbox, mailer, clock, *, mode="live", classifier=None, max_attempts=3, **daemon):
    # these tests are about the executor, not the sender authentication of the reply gate
    daemon.setdefault("reply_to_unauthenticated", True)
    settings = load_settings(daemon=daemon)
    policy, renderer = load_policy_and_templates(settings)
    env = build_env(settings, renderer, mode)
    if getattr(env.gate, "require_authenticated", False):  # until gate_config reads reply_to_unauthenticated
        env = dataclasses.replace(env, gate=dataclasses.replace(env.gate, require_authenticated=False))
    ex = Executor(journal=journal, mailbox=mailbox, mailer=mailer, classifier=classifier or StubClassifier(),
                  policy=policy, env=env, max_attempts=max_attempts,
                  retry=RetryPolicy(30, 3600, 5), clock=clock, rng=lambda: 0.5)
    ex.opened(mailbox.uidvalidity)
    return ex


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    journal = Journal(tmp_path / "j.sqlite3")
    mb = FakeMailbox()
    mailer = FakeMailer()
    ex = make(journal, mb, mailer, clock)  # first start: T0
    clock.advance(minutes=1)
    return clock, journal, mb, mailer, ex


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_inquiry_is_forwarded_acknowledged_and_filed(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    assert run(ex.reconcile()) == 1
    assert [r for _, r, _ in mailer.sent] == [[COORD], [PAT]]
    fwd, ack = (parsed(raw) for _, _, raw in mailer.sent)
    assert fwd["Reply-To"].addresses[0].addr_spec == PAT
    assert ack["Auto-Submitted"] == "auto-replied" and ack["In-Reply-To"] == "<m1@example.org>"
    assert mailer.sent[1][0] == ""  # null envelope sender for the auto-reply
    assert mb.messages == {} and len(mb.folders["Guard/Routed"]) == 1
    assert journal.counts() == {"messages.done": 1, "outbox.sent": 2}


def test_scam_is_quarantined_and_nobody_answered(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="scam", sender="housing@travellerpoint.org"), clock())
    run(ex.reconcile())
    assert mailer.sent == []
    assert len(mb.folders["Guard/Quarantine"]) == 1


def test_report_reply_goes_to_the_reporter_only(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="report", extra="X-Test-Inner: scam"), clock())
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[PAT]]
    assert "this is a scam" in parsed(mailer.sent[0][2])["Subject"]


def test_paid_report_alerts_coordinator_first_then_bank_reply(world):
    clock, journal, mb, mailer, ex = world
    uid = mb.deliver(mail(category="report", extra="X-Test-Inner: scam\nX-Test-Paid: yes"), clock())
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD], [PAT]]
    assert parsed(mailer.sent[0][2])["Importance"] == "high"
    assert "contact your bank" in parsed(mailer.sent[1][2])["Subject"]
    assert uid in mb.flagged and len(mb.folders["Guard/Review"]) == 1


def test_automated_mail_is_filed_never_answered(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="automated", extra="Auto-Submitted: auto-replied"), clock())
    run(ex.reconcile())
    assert mailer.sent == [] and len(mb.folders["Guard/Automated"]) == 1


def test_suspicious_goes_to_review_without_reply(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="suspicious"), clock())
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD]]
    assert "[guard: review]" in parsed(mailer.sent[0][2])["Subject"]
    assert len(mb.folders["Guard/Review"]) == 1


def test_other_is_left_in_place_and_not_reprocessed(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="other"), clock())
    run(ex.reconcile())
    run(ex.reconcile())
    assert mailer.sent == [] and len(mb.messages) == 1
    assert journal.counts() == {"messages.done": 1}


def test_second_reconcile_repeats_nothing(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    run(ex.reconcile())
    run(ex.reconcile())
    assert len(mailer.sent) == 2


def test_gate_refusal_is_recorded_with_its_reason(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(extra="Auto-Submitted: auto-replied"), clock())
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD]]  # forwarded, not acknowledged
    row = journal.by_id(1)
    assert row.suppressed[0][0] == "reply:inquiry_ack"
    assert row.suppressed[0][1][0].startswith("auto-submitted:")


def test_same_sender_gets_the_same_template_once_per_window(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(mid="<a@x>"), clock())
    mb.deliver(mail(mid="<b@x>"), clock())
    run(ex.reconcile())
    assert len(mailer.to(PAT)) == 1 and len(mailer.to(COORD)) == 2
    clock.advance(days=8)
    mb.deliver(mail(mid="<c@x>"), clock())
    run(ex.reconcile())
    assert len(mailer.to(PAT)) == 2


def test_backlog_before_first_start_gets_no_reply(tmp_path):
    clock = Clock()
    journal = Journal(tmp_path / "j.sqlite3")
    mb, mailer = FakeMailbox(), FakeMailer()
    mb.deliver(mail(), clock())  # already there when guard starts
    clock.advance(minutes=5)
    ex = make(journal, mb, mailer, clock)
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD]]
    assert any(r.startswith("backlog:") for r in journal.by_id(1).suppressed[0][1])


def test_circuit_breaker_opens_and_alerts_once(tmp_path):
    clock = Clock()
    journal = Journal(tmp_path / "j.sqlite3")
    mb, mailer = FakeMailbox(), FakeMailer()
    ex = make(journal, mb, mailer, clock, max_replies_per_hour=2)
    clock.advance(minutes=1)
    for i in range(4):
        mb.deliver(mail(sender=f"p{i}@example.org", mid=f"<{i}@x>"), clock())
    run(ex.reconcile())
    acks = [r for _, r, _ in mailer.sent if r[0].startswith("p")]
    assert len(acks) == 2
    alerts = [raw for _, r, raw in mailer.sent if r == [COORD] and b"automatic replies paused" in raw]
    assert len(alerts) == 1
    assert "circuit-breaker" in journal.by_id(3).suppressed[0][1][0]


def test_shadow_mode_sends_replies_to_the_coordinator(tmp_path):
    clock = Clock()
    journal, mb, mailer = Journal(tmp_path / "j.sqlite3"), FakeMailbox(), FakeMailer()
    ex = make(journal, mb, mailer, clock, mode="shadow")
    clock.advance(minutes=1)
    mb.deliver(mail(), clock())
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD], [COORD]]
    assert parsed(mailer.sent[1][2])["Subject"].strip().startswith("[shadow: to pat@example.org]")
    assert len(mb.folders["Guard/Routed"]) == 1
    mb.deliver(mail(mid="<again@x>"), clock())  # the window still counts against the participant
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD], [COORD], [COORD]]


def test_dry_run_sends_and_moves_nothing(tmp_path):
    from guard.daemon.mailer import NullMailer

    clock = Clock()
    journal, mb, mailer = Journal(":memory:"), FakeMailbox(), NullMailer()
    ex = make(journal, mb, mailer, clock, mode="dry-run")
    clock.advance(minutes=1)
    mb.deliver(mail(category="scam"), clock())
    mb.deliver(mail(mid="<2@x>"), clock())
    run(ex.reconcile())
    assert len(mb.messages) == 2 and mb.folders == {}
    assert [r for _, r in mailer.would_send] == [[COORD], [PAT]]


# -- crash safety ------------------------------------------------------------------------


def test_crash_after_the_commit_point_is_never_sent_twice(world):
    """guard died after handing the message over, before the server's answer was journalled:
    the next run takes it as sent (unconfirmed, logged), files the message, sends nothing again."""
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="report", extra="X-Test-Inner: scam"), clock())
    mailer.crash_after_send = Crash()
    with pytest.raises(Crash):
        run(ex.reconcile())
    (ob,) = journal.outbox(1)
    assert ob.state == "sending"
    ex2 = make(journal, mb, mailer, clock)
    run(ex2.reconcile())
    assert len(mailer.sent) == 1
    (ob,) = journal.outbox(1)
    assert ob.state == "sent" and ob.last_error.startswith("unconfirmed")
    assert mb.messages == {} and journal.get(ex2.key(1)).state == "done"


def test_crash_before_the_commit_point_sends_exactly_once(world):
    """guard died before anything was handed to the server: the intent is sent by the next run."""
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="report", extra="X-Test-Inner: scam"), clock())
    mailer.crash_at_commit = Crash()
    with pytest.raises(Crash):
        run(ex.reconcile())
    assert mailer.sent == [] and journal.outbox(1)[0].state == "intent"
    ex2 = make(journal, mb, mailer, clock)
    run(ex2.reconcile())
    assert len(mailer.sent) == 1 and journal.outbox(1)[0].state == "sent"


def test_crash_after_sent_skips_straight_to_the_move(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    mb.fail_move = Crash()
    with pytest.raises(Crash):
        run(ex.reconcile())
    assert len(mailer.sent) == 2 and len(mb.messages) == 1
    ex2 = make(journal, mb, mailer, clock)
    run(ex2.reconcile())
    assert len(mailer.sent) == 2  # nothing sent twice
    assert mb.messages == {} and len(mb.folders["Guard/Routed"]) == 1


def test_crash_after_intent_sends_exactly_once(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    mailer.failures = [Crash()]  # dies when it would send the first intent
    with pytest.raises(Crash):
        run(ex.reconcile())
    assert mailer.sent == [] and journal.counts()["outbox.intent"] == 2  # nothing handed over yet
    ex2 = make(journal, mb, mailer, clock)
    run(ex2.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[COORD], [PAT]]


def test_crash_during_classification_is_retried_then_poisoned(world):
    clock, journal, mb, mailer, ex = world
    uid = mb.deliver(mail(), clock())
    for _ in range(3):
        ex2 = make(journal, mb, mailer, clock, classifier=_Crashing())
        with pytest.raises(Crash):
            run(ex2.reconcile())
    ex3 = make(journal, mb, mailer, clock)
    run(ex3.reconcile())
    assert mailer.sent == []  # never an auto-reply from the error path
    assert uid in mb.flagged and len(mb.folders["Guard/Review"]) == 1
    assert journal.by_id(1).state == "poison"


class _Crashing:
    def classify(self, msg):
        raise Crash()


def test_classifier_error_poisons_after_max_attempts(world):
    clock, journal, mb, mailer, _ = world
    ex = make(journal, mb, mailer, clock, classifier=StubClassifier(fail_on={"inquiry"}))
    uid = mb.deliver(mail(), clock())
    for _ in range(3):
        run(ex.reconcile())
    assert mailer.sent == [] and uid in mb.flagged and mb.folders["Guard/Review"]
    row = journal.by_id(1)
    assert row.state == "poison" and row.error == "RuntimeError while deciding"


def test_transient_smtp_failure_waits_in_inbox_then_retries(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    mailer.failures = [TransientIOError("SMTP connect: refused")]
    run(ex.reconcile())
    assert len(mailer.sent) == 1  # the ack went; the forward waits
    assert len(mb.messages) == 1 and journal.next_retry() is not None
    run(ex.reconcile())  # not due yet
    assert len(mailer.sent) == 1
    clock.advance(seconds=31)
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[PAT], [COORD]]
    assert mb.messages == {} and journal.counts()["outbox.sent"] == 2


def test_permanent_forward_failure_files_for_review(world):
    clock, journal, mb, mailer, ex = world
    uid = mb.deliver(mail(), clock())
    mailer.failures = [PermanentIOError("SMTP recipient refused: 550")]
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[PAT]]
    assert uid in mb.flagged and len(mb.folders["Guard/Review"]) == 1
    assert journal.counts()["outbox.failed"] == 1


def test_transient_failures_give_up_after_max_attempts(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="report", extra="X-Test-Inner: scam"), clock())
    mailer.failures = [TransientIOError("451")] * 5
    for _ in range(6):
        run(ex.reconcile())
        clock.advance(hours=2)
    assert mailer.sent == [] and journal.counts()["outbox.failed"] == 1
    assert len(mb.folders["Guard/Routed"]) == 1  # a failed reply does not block filing


def test_duplicate_message_id_is_left_alone(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    run(ex.reconcile())
    mb.deliver(mail(), clock())  # the same message again (moved back by a human, or delivered twice)
    run(ex.reconcile())
    assert len(mailer.sent) == 2 and len(mb.messages) == 1
    assert "duplicate" in journal.by_id(2).note


def test_uidvalidity_change_does_not_repeat_answers(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(category="other"), clock())
    run(ex.reconcile())
    mb.uidvalidity = 200  # the server renumbered everything
    ex.opened(200)
    run(ex.reconcile())
    assert mailer.sent == []
    assert journal.mailbox_state(mb.account, mb.mailbox, clock()).uidvalidity_reset == clock()


def test_imap_failure_propagates_for_reconnect(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    mb.fail_fetch = TransientIOError("IMAP fetch: abort")
    with pytest.raises(TransientIOError):
        run(ex.reconcile())
    mb.fail_fetch = None
    run(ex.reconcile())
    assert len(mailer.sent) == 2


def test_uidvalidity_change_with_a_pending_send_adopts_the_new_uid(world):
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(), clock())
    mailer.failures = [TransientIOError("SMTP connect: refused")]
    run(ex.reconcile())  # the forward waits for a retry; the message stays in the inbox
    raw, arrived = mb.messages.pop(1)
    mb.uidvalidity, mb.messages = 300, {9: (raw, arrived)}  # the server renumbered the mailbox
    ex.opened(300)
    clock.advance(minutes=5)
    run(ex.reconcile())
    assert [r for _, r, _ in mailer.sent] == [[PAT], [COORD]]  # each sent once
    assert mb.messages == {} and len(mb.folders["Guard/Routed"]) == 1
    row = journal.by_id(1)
    assert row.state == "done" and (row.key.uidvalidity, row.key.uid) == (300, 9)


# -- batches -------------------------------------------------------------------------------


def test_plan_batches_bounds_count_and_bytes_and_a_big_message_goes_alone():
    from guard.daemon.executor import plan_batches

    uids = list(range(1, 11))
    sizes = {u: 100 for u in uids} | {5: 10_000, 7: 900}
    sizes.pop(9)  # gone since the search
    assert plan_batches(uids, sizes, 3, 1_000, 25_000_000) == [[1, 2, 3], [4], [5], [6, 7], [8, 10]]
    # what is read of a message (max_message_bytes) is what counts
    assert plan_batches(uids, sizes, 50, 1_000, 200) == [[1, 2, 3, 4, 5, 6, 7, 8], [10]]


def test_a_backlog_costs_one_fetch_per_batch_and_one_move_per_folder_per_filing(world):
    clock, journal, mb, mailer, ex = world
    for i in range(12):
        mb.deliver(mail(sender=f"P{i} <p{i}@example.org>", mid=f"<b{i}@example.org>",
                        category=("inquiry", "scam", "automated")[i % 3]), clock())
    ex.batch_size = 5
    run(ex.reconcile())
    assert mb.messages == {} and journal.counts()["messages.done"] == 12
    assert [len(c) for c in mb.fetch_calls] == [5, 5, 2]
    # filed Executor.file_every (500) at a time, not batch by batch: one move per folder for all 12
    assert sorted(len(uids) for _, uids in mb.move_calls) == [4, 4, 4] and ex.file_every >= 12
    # one SMTP connection per pass: closed once at its end (FakeMailer counts close())
    assert len(mailer.sent) == 4 * 2 and mailer.closed == 1


def test_replies_within_one_batch_see_each_other_in_the_reply_window(world):
    """Two inquiries from one sender in the same batch: one acknowledgement, not two."""
    clock, journal, mb, mailer, ex = world
    mb.deliver(mail(mid="<one@example.org>"), clock())
    mb.deliver(mail(mid="<two@example.org>", subject="And another question"), clock())
    run(ex.reconcile())
    assert len(mb.fetch_calls) == 1  # one batch
    assert len(mailer.to(PAT)) == 1 and len(mailer.to(COORD)) == 2
