"""Two senders of the digest on one journal send it once (guard/digest/send.py, DigestClaim).

The daemon's scheduled digest and ``guard digest --now`` may run at the same moment, each a
process with its own SQLite connection to the same journal. Without a claim both saw no pending
digest (or each other's pending one) and both sent. Here two threads, then two processes, race
against a slow fake mailer that counts what it sends."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from guard.digest import records as dj
from guard.digest.send import DigestClaim, DigestService
from guard.daemon.journal import Journal
from guard.paths import shipped
from guard.respond.render import Renderer
from guard.settings import load_settings

from test_digest import handled, mail

T = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
DUE = datetime(2026, 1, 6, 7, 0, tzinfo=timezone.utc)  # 08:00 Madrid the next day


class CountingMailer:
    """Counts sends across threads (and, with ``log``, across processes); each send is slow."""

    def __init__(self, log: Path | None = None, delay: float = 0.3) -> None:
        self.sent: list[bytes] = []
        self.lock = threading.Lock()
        self.log = log
        self.delay = delay

    async def send(self, raw, envelope_from, recipients, on_commit=None):
        await asyncio.sleep(self.delay)
        if on_commit is not None:
            on_commit()
        with self.lock:
            self.sent.append(raw)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")
        return "250 ok"


def make_journal(path: Path) -> Path:
    j = Journal(path)
    dj.state_setdefault(j, "digest.since", str(T.timestamp()))
    for i in range(3):
        handled(j, i + 1, mail(i + 1), "scam", T)
    j.close()
    return path


def service(path: Path, mailer, now: datetime) -> DigestService:
    return DigestService(load_settings(), Journal(path), mailer, Renderer(shipped("templates")), clock=lambda: now)


def race(path: Path, mailer, *calls) -> list:
    """Run each call (a coroutine function of a fresh service) in its own thread, released together."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(i, call):
        svc = service(path, mailer, DUE)
        try:
            barrier.wait()
            results[i] = asyncio.run(call(svc))
        finally:
            svc.journal.close()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def sent_rows(path: Path) -> list:
    j = Journal(path)
    try:
        return j.db.execute("SELECT id, state FROM digests ORDER BY id").fetchall()
    finally:
        j.close()


@pytest.mark.parametrize("round_", range(3))
def test_two_digest_now_at_once_send_one_digest(tmp_path, round_):
    path = make_journal(tmp_path / "journal.sqlite3")
    mailer = CountingMailer()
    results = race(path, mailer, lambda s: s.send_now(), lambda s: s.send_now())
    assert len(mailer.sent) == 1, f"{len(mailer.sent)} digests sent"
    assert sorted(results) == [False, True]
    assert [tuple(r) for r in sent_rows(path)] == [(1, "sent")]


def test_scheduled_digest_and_digest_now_at_once_send_one_digest(tmp_path):
    path = make_journal(tmp_path / "journal.sqlite3")
    mailer = CountingMailer()
    results = race(path, mailer, lambda s: s.maybe_send(), lambda s: s.send_now())
    assert len(mailer.sent) == 1 and sorted(results) == [False, True]
    # the daemon's next wake-up: the period was covered by whichever sent, nothing is due
    svc = service(path, mailer, DUE + timedelta(minutes=1))
    try:
        assert not asyncio.run(svc.maybe_send())
        assert svc.due() > DUE + timedelta(minutes=1)
    finally:
        svc.journal.close()
    assert len(mailer.sent) == 1


def _process_sender(path: str, log: str, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    svc = service(Path(path), CountingMailer(Path(log)), DUE)
    try:
        asyncio.run(svc.send_now())
    finally:
        svc.journal.close()


def test_two_processes_send_one_digest(tmp_path):
    path = make_journal(tmp_path / "journal.sqlite3")
    log = tmp_path / "sends.log"
    ctx = multiprocessing.get_context("fork")
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=_process_sender, args=(str(path), str(log), start_at)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(log.read_text().splitlines()) == 1
    assert [tuple(r) for r in sent_rows(path)] == [(1, "sent")]


def test_a_stale_claim_is_taken_over_a_live_one_is_respected(tmp_path):
    path = make_journal(tmp_path / "journal.sqlite3")
    j = Journal(path)
    try:
        held = DigestClaim(j, DUE)
        assert held.acquire()
        other = DigestClaim(j, DUE)
        assert not other.acquire() and other.holder == (socket.gethostname(), os.getpid())
        assert DigestClaim(j, DUE + timedelta(seconds=held.lease + 1)).acquire()  # the lease ran out
        # a claim of a process that is gone from this host: taken over at once
        j.db.execute("UPDATE digest_claims SET pid=?", (2 ** 22 + 12345,))
        assert DigestClaim(j, DUE).acquire()
        # a claim of another host within its lease: respected
        j.db.execute("UPDATE digest_claims SET host='elsewhere', pid=1")
        mailer = CountingMailer(delay=0)
        svc = DigestService(load_settings(), j, mailer, Renderer(shipped("templates")), clock=lambda: DUE)
        assert not asyncio.run(svc.send_now()) and svc.busy == ("elsewhere", 1) and mailer.sent == []
        j.db.execute("DELETE FROM digest_claims")
        assert asyncio.run(svc.send_now()) and len(mailer.sent) == 1
        assert j.db.execute("SELECT COUNT(*) FROM digest_claims").fetchone()[0] == 0  # released
    finally:
        j.close()


def test_the_daemon_waits_calmly_while_another_process_sends(tmp_path):
    path = make_journal(tmp_path / "journal.sqlite3")
    j = Journal(path)
    try:
        svc = DigestService(load_settings(), j, CountingMailer(delay=0), Renderer(shipped("templates")),
                            clock=lambda: DUE)
        assert svc.seconds_until_due() == 0.0  # due now
        other = DigestClaim(Journal(path), DUE)
        assert other.acquire()
        other.host = "elsewhere"
        j.db.execute("UPDATE digest_claims SET host='elsewhere'")
        assert svc.seconds_until_due() == 10.0  # not 0: no busy loop of wake-ups while the other sends
        assert not asyncio.run(svc.maybe_send())
        other.release()
        other.journal.close()
        assert svc.seconds_until_due() == 0.0 and asyncio.run(svc.maybe_send())
    finally:
        j.close()


def test_the_mailer_connection_is_closed_after_the_digest(tmp_path):
    """SmtpMailer keeps its connection for a batch; the digest (and ``guard digest --now``) closes it."""
    path = make_journal(tmp_path / "journal.sqlite3")

    class ClosingMailer(CountingMailer):
        closed = 0

        async def close(self):
            self.closed += 1

    mailer = ClosingMailer(delay=0)
    svc = service(path, mailer, DUE)
    try:
        assert asyncio.run(svc.send_now()) and len(mailer.sent) == 1 and mailer.closed == 1
    finally:
        svc.journal.close()
