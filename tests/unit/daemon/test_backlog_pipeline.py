"""What the backlog's speed-ups must not change: the worker fed the classifier of the moment (and no
journal), the journal's state kept in memory following every change, compiled templates kept
between starts; and, through them, a pipelined backlog decides, sends and journals exactly what
batch after batch did, and an IMAP failure or a crash mid-backlog loses nothing and sends nothing
twice."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest
from daemon_fakes import Clock, Crash, FakeMailbox, FakeMailer, StubClassifier, TransientIOError, mail
from test_executor import COORD, make, run, world  # noqa: F401 - world is a fixture

import guard.daemon.executor as executor_module
from guard.daemon.budget import InlineAnalyser, ProcessAnalyser
from guard.daemon.journal import Journal


def inquiries(mb, clock, n: int, tag: str = "p") -> list[int]:
    return [mb.deliver(mail(sender=f"P{i} <{tag}{i}@example.org>", mid=f"<{tag}{i}@example.org>"), clock())
            for i in range(n)]


class SlowMailer(FakeMailer):
    """Sends take a moment, over ``concurrency`` lanes; every send recorded in ``events``."""

    def __init__(self, concurrency: int, events: list) -> None:
        super().__init__()
        self.concurrency = concurrency
        self.events = events

    async def send(self, raw, envelope_from, recipients, on_commit=None):
        self.events.append(("send", recipients[0]))
        await asyncio.sleep(0.002)
        return await super().send(raw, envelope_from, recipients, on_commit)


def record(ex, journal, mb, events: list, move_seconds: float = 0.0) -> None:
    """Moves (which take ``move_seconds``) into ``events``."""
    move = mb.move_many

    async def move_many(uids, folder):
        events.append(("move", tuple(uids)))
        await asyncio.sleep(move_seconds)
        out = await move(uids, folder)
        events.append(("moved", tuple(uids)))
        return out

    mb.move_many = move_many


def test_a_single_batch_is_filed_before_process_batch_returns(world):
    clock, journal, mb, mailer, ex = world
    uids = inquiries(mb, clock, 3)
    out = run(ex.process_batch(uids))
    assert [out[u].state for u in uids] == ["done"] * 3 and mb.messages == {}


def _backlog(clock, mb) -> None:
    """Inquiries, scams, reports, automated mail, unreadable mail (poison), a duplicate and a sender
    who writes twice."""
    kinds = itertools.cycle(["inquiry", "scam", "report", "automated", "inquiry", "oops", "suspicious"])
    for i in range(14):
        kind = next(kinds)
        extra = "X-Test-Inner: scam" if kind == "report" else ""
        mb.deliver(mail(sender=f"S{i} <s{i}@example.org>", mid=f"<m{i}@example.org>", category=kind, extra=extra),
                   clock())
        if i == 4:  # the same message delivered again (same Message-ID and content): left alone
            mb.deliver(mail(sender="S4 <s4@example.org>", mid="<m4@example.org>", category="inquiry"), clock())
    mb.deliver(mail(sender="S0 <s0@example.org>", mid="<again@example.org>"), clock())  # the gate's window


def _world(tmp_path, name: str, batch_size: int, monkeypatch, *, overlap: bool):
    counter = itertools.count()
    monkeypatch.setattr(executor_module, "secrets", type("S", (), {"token_hex": staticmethod(
        lambda n: f"{next(counter):0{2 * n}x}")}))
    clock = Clock()
    journal = Journal(tmp_path / f"{name}.sqlite3")
    mb, mailer = FakeMailbox(), SlowMailer(3, [])
    ex = make(journal, mb, mailer, clock, classifier=StubClassifier(fail_on={"oops"}), max_attempts=1)
    clock.advance(minutes=1)
    _backlog(clock, mb)
    ex.batch_size = batch_size
    if overlap:
        run(ex.reconcile())
    else:  # batch after batch, each fetched, analysed, decided, sent and filed before the next
        uids = sorted(mb.messages)
        for i in range(0, len(uids), batch_size):
            run(ex.process_batch(uids[i:i + batch_size]))
    db = journal.db
    tables = {t: [tuple(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY id")]
              for t in ("messages", "outbox", "replies")}
    # the digest queue's order is the order messages were filed in (a backlog files its sent
    # messages several batches at a time, a poison message at once): the same rows, in other order
    tables["digest_queue"] = [tuple(r) for r in db.execute("SELECT message, kind, at FROM digest_queue "
                                                           "ORDER BY message, kind")]
    tables["message_facts"] = [tuple(r) for r in db.execute("SELECT * FROM message_facts ORDER BY message")]
    return tables, sorted(mailer.sent), {k: sorted(v) for k, v in mb.folders.items()}, sorted(mb.flagged)


def test_the_pipeline_decides_sends_and_journals_what_one_batch_at_a_time_did(tmp_path, monkeypatch):
    one = _world(tmp_path, "one", 2, monkeypatch, overlap=False)
    many = _world(tmp_path, "many", 2, monkeypatch, overlap=True)  # eight batches, each read ahead
    assert many == one
    tables, sent, folders, _ = many
    assert {r[6] for r in tables["messages"]} == {"done", "poison"} and len(sent) > 10
    assert len(folders["Guard/Review"]) >= 2
    assert any("duplicate" in (r[16] or "") for r in tables["messages"])


def test_a_backlog_is_filed_several_batches_at_a_time(world):
    """One MOVE per folder for ``file_every`` messages of several batches (a MOVE costs the server
    about as much for one UID as for hundreds, more the bigger the inbox), the rest at the end;
    each message sent before its move, and journalled as done only after it."""
    clock, journal, mb, mailer, ex = world
    events: list = []
    record(ex, journal, mb, events)
    mailer_send = mailer.send

    async def send(raw, envelope_from, recipients, on_commit=None):
        events.append(("send", recipients[0]))
        return await mailer_send(raw, envelope_from, recipients, on_commit)

    mailer.send = send
    uids = inquiries(mb, clock, 10)
    ex.batch_size, ex.file_every = 2, 4
    assert run(ex.reconcile()) == 10
    moves = [e for e in events if e[0] == "move"]
    assert [len(m[1]) for m in moves] == [4, 4, 2]  # not five moves of two
    assert mb.messages == {} and journal.counts() == {"messages.done": 10, "outbox.sent": 20}
    for uid in uids:  # every send of a message before the move that files it
        move_at = next(i for i, e in enumerate(events) if e[0] == "move" and uid in e[1])
        assert sum(1 for e in events[:move_at] if e[0] == "send") >= 2 * (uids.index(uid) + 1)


def test_a_crash_before_the_backlog_is_filed_files_it_at_the_next_start_and_sends_nothing_twice(world):
    clock, journal, mb, mailer, ex = world
    uids = inquiries(mb, clock, 7)
    ex.batch_size, ex.file_every = 2, 100
    move = mb.move_many

    async def killed(uids, folder):
        raise Crash()  # kill -9 at the backlog's first move: everything sent, nothing filed

    mb.move_many = killed
    with pytest.raises(Crash):
        run(ex.reconcile())
    assert {journal.get(ex.key(u)).state for u in uids} == {"decided"} and len(mailer.sent) == 14
    mb.move_many = move
    ex2 = make(journal, mb, FakeMailer(), clock)
    run(ex2.reconcile())
    assert ex2.mailer.sent == [] and mb.messages == {}
    assert journal.counts() == {"messages.done": 7, "outbox.sent": 14}


class FailingOnce(FakeMailbox):
    """The first move (batch 1's) fails: the connection dropped, batch 2 already begun."""

    def __init__(self) -> None:
        super().__init__()
        self.moves = 0

    async def move_many(self, uids, folder):
        self.moves += 1
        if self.moves == 1:
            await asyncio.sleep(0.005)
            raise TransientIOError("IMAP move: connection reset")
        return await super().move_many(uids, folder)


def test_a_failed_move_mid_backlog_is_raised_and_finished_at_the_next_reconcile(tmp_path):
    clock = Clock()
    journal, mb, events = Journal(tmp_path / "j.sqlite3"), FailingOnce(), []
    mailer = SlowMailer(2, events)
    ex = make(journal, mb, mailer, clock)
    clock.advance(minutes=1)
    uids = inquiries(mb, clock, 9)
    ex.batch_size = 3
    with pytest.raises(TransientIOError):
        run(ex.reconcile())
    assert journal.get(ex.key(uids[0])).state == "decided"  # sent, not filed
    ex2 = make(journal, mb, mailer, clock)
    ex2.batch_size = 3
    run(ex2.reconcile())
    assert journal.counts() == {"messages.done": 9, "outbox.sent": 18}
    assert len(mailer.sent) == 18 and len({raw for _, _, raw in mailer.sent}) == 18
    assert mb.messages == {}


class CrashAt(SlowMailer):
    """guard dies (kill -9) at the commit point of the n-th send."""

    def __init__(self, n: int) -> None:
        super().__init__(2, [])
        self.n = n
        self.calls = 0

    async def send(self, raw, envelope_from, recipients, on_commit=None):
        self.calls += 1
        if self.calls == self.n:
            raise Crash()
        return await super().send(raw, envelope_from, recipients, on_commit)


def test_a_crash_in_a_later_batch_sends_nothing_twice(tmp_path):
    clock = Clock()
    journal, mb = Journal(tmp_path / "j.sqlite3"), FakeMailbox()
    events: list = []
    mailer = CrashAt(8)  # in batch 2's sends
    ex = make(journal, mb, mailer, clock)
    record(ex, journal, mb, events, move_seconds=0.05)
    clock.advance(minutes=1)
    uids = inquiries(mb, clock, 9)
    ex.batch_size = 3
    with pytest.raises(Crash):
        run(ex.reconcile())
    sent_before = len(mailer.sent)
    ex2 = make(journal, mb, FakeMailer(), clock)
    ex2.batch_size = 3
    run(ex2.reconcile())
    assert sent_before + len(ex2.mailer.sent) == 18
    raws = [raw for _, _, raw in mailer.sent] + [raw for _, _, raw in ex2.mailer.sent]
    assert len(set(raws)) == 18
    assert journal.counts() == {"messages.done": 9, "outbox.sent": 18}
    assert [journal.get(ex2.key(u)).attempts for u in uids[:3]] == [1, 1, 1]


# -- the classifier the worker gets --------------------------------------------------------------


class Lists:
    """A classifier that follows lists kept elsewhere (as the corrections' LiveListsClassifier):
    ``current()`` gives the classifier of the moment."""

    def __init__(self) -> None:
        self.version, self.asked = 0, 0
        self._by_version = {0: StubClassifier()}

    def current(self):
        self.asked += 1
        return self._by_version.setdefault(self.version, StubClassifier())

    def classify(self, msg):  # pragma: no cover - the executor hands the analyser current() instead
        raise AssertionError("the worker was given the list-following classifier itself")


class Given(InlineAnalyser):
    def __init__(self) -> None:
        self.classifiers: list = []

    async def analyse(self, raw, classifier):
        self.classifiers.append(classifier)
        return await super().analyse(raw, classifier)


def test_the_analyser_is_given_the_classifier_of_the_moment(world):
    clock, journal, mb, mailer, ex = world
    lists = ex.classifier = Lists()
    ex.analyser = Given()
    inquiries(mb, clock, 4)
    ex.batch_size = 2
    run(ex.reconcile())
    assert ex.analyser.classifiers == [lists._by_version[0]] * 4
    lists.version = 1  # an entry added by a correction: the next messages get the new classifier
    inquiries(mb, clock, 1, tag="q")
    run(ex.reconcile())
    assert ex.analyser.classifiers[-1] is lists._by_version[1] is not lists._by_version[0]
    assert journal.counts()["messages.done"] == 5


def test_new_lists_start_a_new_worker_and_the_worker_reads_no_journal(world):
    clock, journal, mb, mailer, ex = world
    lists = ex.classifier = Lists()
    ex.analyser = ProcessAnalyser(budget_seconds=10.0)
    inquiries(mb, clock, 4)
    ex.batch_size = 2

    async def reconcile():
        return await ex.reconcile()

    try:
        run(reconcile())
        assert ex.analyser.starts == 1 and lists.asked == 2  # once per batch
        lists.version = 1
        inquiries(mb, clock, 2, tag="q")
        run(reconcile())
        assert ex.analyser.starts == 2
    finally:
        run(ex.analyser.close())
    assert journal.counts()["messages.done"] == 6


# -- the journal ----------------------------------------------------------------------------------


def test_the_mailbox_state_kept_in_memory_follows_every_change(tmp_path):
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    j = Journal(tmp_path / "j.sqlite3")
    # a first start recorded inside a transaction that is rolled back is not kept
    with pytest.raises(RuntimeError):
        with j.transaction():
            assert j.mailbox_state("a", "INBOX", t0).first_start == t0
            raise RuntimeError
    assert j.mailbox_state("a", "INBOX", t0 + timedelta(hours=1)).first_start == t0 + timedelta(hours=1)
    assert j.mailbox_state("a", "INBOX", t0 + timedelta(hours=2)).first_start == t0 + timedelta(hours=1)
    # a UIDVALIDITY change
    assert not j.note_uidvalidity("a", "INBOX", 7, t0)
    assert j.note_uidvalidity("a", "INBOX", 8, t0 + timedelta(hours=3))
    assert j.mailbox_state("a", "INBOX", t0).uidvalidity == 8
    assert j.mailbox_state("a", "INBOX", t0).uidvalidity_reset == t0 + timedelta(hours=3)
    # another connection's commit
    other = sqlite3.connect(tmp_path / "j.sqlite3")
    other.execute("UPDATE mailboxes SET uidvalidity=9")
    other.commit()
    assert j.mailbox_state("a", "INBOX", t0).uidvalidity == 9


# -- compiled templates kept between starts --------------------------------------------------------


def test_compiled_templates_are_kept_and_a_damaged_entry_is_compiled_again(tmp_path, monkeypatch):
    import jinja2

    from guard.paths import shipped
    from guard.respond.render import Renderer, TemplateCodeCache, _sample_context

    ctx = _sample_context(True)
    plain = Renderer(shipped("templates"))
    want = plain.render("inquiry_ack", ctx)
    cache = TemplateCodeCache.under(tmp_path)
    first = Renderer(shipped("templates"), bytecode_cache=cache)
    assert first.render("inquiry_ack", ctx) == want
    kept = sorted(cache.directory and __import__("pathlib").Path(cache.directory).glob("*"))
    assert kept
    compiled: list = []
    real = jinja2.Environment._compile
    monkeypatch.setattr(jinja2.Environment, "_compile",
                        lambda self, source, filename: (compiled.append(filename), real(self, source, filename))[1])
    again = Renderer(shipped("templates"), bytecode_cache=TemplateCodeCache.under(tmp_path))
    assert again.render("inquiry_ack", ctx) == want and compiled == []
    for p in kept:
        p.write_bytes(b"damaged")
    damaged = Renderer(shipped("templates"), bytecode_cache=TemplateCodeCache.under(tmp_path))
    assert damaged.render("inquiry_ack", ctx) == want and compiled
    assert TemplateCodeCache.under(None) is None
