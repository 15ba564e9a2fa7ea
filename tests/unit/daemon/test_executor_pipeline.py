"""The backlog pipeline: the next batch analysed while this one is sent and filed, several SMTP
connections at once, the worker fed a whole batch, and one fsync for a batch's sends; every
message still goes through each of its steps and commits, and nothing is sent twice after a crash."""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from daemon_fakes import Crash, FakeMailer, StubClassifier, mail
from test_executor import COORD, make, run, world  # noqa: F401 - world is a fixture

from guard.daemon.budget import AnalysisFailed, BudgetExceeded, InlineAnalyser, ProcessAnalyser
from guard.daemon.journal import Journal


def inquiries(mb, clock, n: int, tag: str = "p") -> list[int]:
    return [mb.deliver(mail(sender=f"P{i} <{tag}{i}@example.org>", mid=f"<{tag}{i}@example.org>"), clock())
            for i in range(n)]


class Recording:
    """An analyser that logs when each message is analysed (inline, no budget)."""

    budget_seconds = None

    def __init__(self, events: list) -> None:
        self.events, self.inner = events, InlineAnalyser()

    async def analyse(self, raw, classifier):
        self.events.append(("analyse", re.search(rb"Message-ID: <([^@]+)@", raw).group(1).decode()))
        await asyncio.sleep(0)
        return await self.inner.analyse(raw, classifier)

    async def close(self):
        pass


class SlowMailer(FakeMailer):
    """Sends take a moment; ``concurrency`` lanes; records the sends in flight."""

    def __init__(self, concurrency: int, events: list | None = None) -> None:
        super().__init__()
        self.concurrency = concurrency
        self.events = events if events is not None else []
        self.in_flight = self.most = 0

    async def send(self, raw, envelope_from, recipients, on_commit=None):
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.events.append(("send", recipients[0]))
        try:
            await asyncio.sleep(0.002)
            return await super().send(raw, envelope_from, recipients, on_commit)
        finally:
            self.in_flight -= 1


def test_the_next_batch_is_begun_and_analysed_before_this_one_is_sent(world):
    clock, journal, mb, _, ex = world
    events: list = []
    ex.mailer = SlowMailer(1, events)
    ex.analyser = Recording(events)
    inquiries(mb, clock, 6)
    ex.batch_size = 3
    assert run(ex.reconcile()) == 6
    sends = [i for i, e in enumerate(events) if e[0] == "send"]
    analysed = {e[1]: i for i, e in enumerate(events) if e[0] == "analyse"}
    # batch 1 (p0..p2) analysed before its first send; batch 2 (p3..p5) read, begun and handed to
    # the analyser before batch 1 is decided (its first message before batch 1's first send: the
    # worker has it while batch 1 is decided, not only once the sends wait), and analysed while
    # batch 1's six sends were going out
    assert max(analysed[f"p{i}"] for i in range(3)) < analysed["p3"] < sends[0]
    assert analysed["p5"] < sends[5]
    assert journal.counts() == {"messages.done": 6, "outbox.sent": 12}
    assert [len(c) for c in mb.fetch_calls] == [3, 3]
    assert all(journal.get(ex.key(u)).attempts == 1 for u in range(1, 7))


def test_a_crash_while_a_batch_is_sent_and_the_next_is_begun_sends_nothing_twice(world):
    clock, journal, mb, _, ex = world
    mailer = FakeMailer()
    mailer.crash_after_send = Crash()  # guard dies right after the first send of batch 1
    ex.mailer = mailer
    uids = inquiries(mb, clock, 6)
    ex.batch_size = 3
    with pytest.raises(Crash):
        run(ex.reconcile())
    # batch 2 was begun (its attempts committed) before the crash: "new", and read again
    assert [journal.get(ex.key(u)).state for u in uids] == ["decided"] * 3 + ["new"] * 3
    ex2 = make(journal, mb, mailer, clock)
    ex2.batch_size = 3
    run(ex2.reconcile())
    assert journal.counts() == {"messages.done": 6, "outbox.sent": 12}
    assert len(mailer.sent) == 12 and len({raw for _, _, raw in mailer.sent}) == 12
    assert [journal.get(ex2.key(u)).attempts for u in uids] == [1, 1, 1, 2, 2, 2]


def test_stopping_finishes_a_batch_already_begun_and_starts_no_other(world):
    clock, journal, mb, mailer, ex = world
    inquiries(mb, clock, 9)
    ex.batch_size = 3
    inner = ex._complete_batch

    async def complete(started, ahead):
        out = await inner(started, ahead)
        ex.stop.set()  # SIGTERM during the first batch, once the second is begun
        return out

    ex._complete_batch = complete
    run(ex.reconcile())
    states = [journal.get(ex.key(u)) for u in range(1, 10)]
    # batch 1 done; batch 2, begun ahead, analysed and decided, its sends stopped after the
    # first message; batch 3 never read
    assert [r.state for r in states[:3]] == ["done"] * 3
    assert states[3].state == "done" and [r.state for r in states[4:6]] == ["decided"] * 2
    assert states[6:] == [None] * 3
    assert all(r.attempts == 1 for r in states[:6])
    ex2 = make(journal, mb, mailer, clock)
    run(ex2.reconcile())
    assert journal.counts() == {"messages.done": 9, "outbox.sent": 18} and len(mailer.sent) == 18


def test_the_sends_of_a_batch_go_over_several_connections_each_message_in_order(world):
    clock, journal, mb, _, ex = world
    mailer = SlowMailer(3)
    ex.mailer = mailer
    inquiries(mb, clock, 8)
    run(ex.reconcile())
    assert mailer.most == 3
    assert journal.counts() == {"messages.done": 8, "outbox.sent": 16}
    for i in range(8):  # the forward to the coordinator before the participant's acknowledgement
        mine = [r for _, r, raw in mailer.sent if f"p{i}@example.org".encode() in raw]
        assert mine == [[COORD], [f"p{i}@example.org"]]


def test_one_fsync_for_the_sends_of_a_batch(world, monkeypatch):
    clock, journal, mb, mailer, ex = world
    synced = []
    real = journal.sync
    monkeypatch.setattr(journal, "sync", lambda: (synced.append(1), real())[1])
    inquiries(mb, clock, 5)
    run(ex.reconcile())
    assert len(mailer.sent) == 10 and len(synced) == 1
    assert journal.counts() == {"messages.done": 5, "outbox.sent": 10}


def test_journal_sync_fsyncs_the_wal(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j.sqlite3")
    seen = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    j.sync()
    assert seen == [str(tmp_path / "j.sqlite3-wal")]
    Journal(":memory:").sync()  # nothing to do


class Hanging(StubClassifier):
    def classify(self, msg):
        if (msg.header("X-Test-Category") or "").strip() == "hang":
            re.match(r"(a+)+$", "a" * 40 + "!")
        return super().classify(msg)


def test_a_batch_streamed_to_the_worker_keeps_each_message_budget():
    """A hanging message in the middle of a batch: killed at its budget, the one before and the
    ones after analysed (the rest by a new worker); a failing one is its own error."""
    raws = [mail(mid="<a@example.org>"), mail(category="hang", mid="<h@example.org>"),
            mail(category="oops", mid="<e@example.org>"), mail(mid="<b@example.org>")]
    pa = ProcessAnalyser(budget_seconds=1.0)

    async def main():
        try:
            return await pa.analyse_many(raws, Hanging(fail_on={"oops"}))
        finally:
            await pa.close()

    got = run(main())
    assert got[0].verdict.category == "inquiry" and got[3].verdict.category == "inquiry"
    assert isinstance(got[1], BudgetExceeded) and str(got[1]) == "time budget exceeded (1 s)"
    assert isinstance(got[2], AnalysisFailed) and str(got[2]) == "RuntimeError"
    assert pa.starts == 2


def test_a_backlog_through_the_real_worker_with_a_hanging_message(world):
    clock, journal, mb, mailer, ex = world
    ex.classifier = Hanging()
    ex.analyser = ProcessAnalyser(budget_seconds=1.0)
    inquiries(mb, clock, 3, tag="a")
    hang = mb.deliver(mail(category="hang", mid="<hang@example.org>"), clock())
    inquiries(mb, clock, 3, tag="b")
    ex.batch_size = 2

    async def main():
        try:
            return await ex.reconcile()
        finally:
            await ex.analyser.close()

    run(main())
    row = journal.get(ex.key(hang))
    assert row.state == "poison" and row.note == "time budget exceeded (1 s)"
    assert journal.counts()["messages.done"] == 6 and len(mailer.sent) == 12
    assert ex.analyser.starts == 2
