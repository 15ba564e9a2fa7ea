"""Fakes for the daemon's IO (mailbox, mailer, clock) and a stub classifier, for unit tests.

The stub classifier reads the category from an ``X-Test-Category`` header (``report`` may add
``X-Test-Inner`` and ``X-Test-Paid: yes``), so executor tests do not depend on rule tuning.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.mailbox import Fetched
from guard.classification.verdict import Verdict

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def mail(*, sender: str = "Pat Participant <pat@example.org>", to: str = "events@crm.cat",
         subject: str = "Question about registration", category: str = "inquiry", mid: str | None = "<m1@example.org>",
         extra: str = "", body: str = "Hello, is there a registration fee?") -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", "Date: Mon, 05 Jan 2026 08:59:00 +0000",
             f"X-Test-Category: {category}"]
    if mid:
        lines.append(f"Message-ID: {mid}")
    if extra:
        lines.extend(extra.strip().splitlines())
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode()


class StubClassifier:
    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.fail_on = fail_on or set()

    def classify(self, msg) -> Verdict:
        cat = (msg.header("X-Test-Category") or "other").strip()
        if cat in self.fail_on:
            raise RuntimeError("classifier bug")
        inner = None
        if msg.header("X-Test-Inner"):
            inner = Verdict(msg.header("X-Test-Inner").strip(), 7.0)
        return Verdict(cat, 7.0 if cat == "scam" else 0.0, inner=inner, paid=(msg.header("X-Test-Paid") == "yes"))


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in guard catches it."""


@dataclass
class FakeMailbox:
    account: str = "events@crm.cat"
    mailbox: str = "INBOX"
    uidvalidity: int = 100
    messages: dict[int, tuple[bytes, datetime]] = field(default_factory=dict)
    folders: dict[str, list[bytes]] = field(default_factory=dict)
    flagged: set[int] = field(default_factory=set)
    next_uid: int = 1
    fail_move: BaseException | None = None
    fail_fetch: BaseException | None = None
    fetch_calls: list[list[int]] = field(default_factory=list)
    move_calls: list[tuple[str, list[int]]] = field(default_factory=list)

    def deliver(self, raw: bytes, arrived: datetime) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = (raw, arrived)
        return uid

    async def open(self) -> int:
        return self.uidvalidity

    async def close(self) -> None:
        pass

    async def uids_after(self, uid: int) -> list[int]:
        return sorted(u for u in self.messages if u > uid)

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        return {u: len(self.messages[u][0]) for u in uids if u in self.messages}

    async def fetch(self, uid: int) -> Fetched | None:
        return (await self.fetch_many([uid])).get(uid)

    async def fetch_many(self, uids: list[int]) -> dict[int, Fetched]:
        if self.fail_fetch is not None:
            raise self.fail_fetch
        self.fetch_calls.append(list(uids))
        return {u: Fetched(u, self.messages[u][0], self.messages[u][1], len(self.messages[u][0]))
                for u in uids if u in self.messages}

    async def flag_many(self, uids: list[int]) -> None:
        self.flagged.update(u for u in uids if u in self.messages)

    async def move_many(self, uids: list[int], folder: str) -> set[int]:
        if self.fail_move is not None:
            exc, self.fail_move = self.fail_move, None
            raise exc
        moved = set()
        for uid in uids:
            if uid in self.messages:
                raw, _ = self.messages.pop(uid)
                self.folders.setdefault(folder, []).append(raw)
                moved.add(uid)
        self.move_calls.append((folder, sorted(moved)))
        return moved

    async def wait(self, timeout: float, stop: asyncio.Event) -> str:
        return "timeout"


@dataclass
class FakeMailer:
    sent: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    #: errors to raise, in order, before succeeding
    failures: list[BaseException] = field(default_factory=list)
    #: raise this right after "sending" (the server has the message; guard dies before recording it)
    crash_after_send: BaseException | None = None

    #: raise this at the commit point, before the message is handed over (guard dies just before)
    crash_at_commit: BaseException | None = None
    closed: int = 0

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str], on_commit=None) -> str:
        if self.failures:
            raise self.failures.pop(0)
        if self.crash_at_commit is not None:
            exc, self.crash_at_commit = self.crash_at_commit, None
            raise exc
        if on_commit is not None:
            on_commit()
        self.sent.append((envelope_from, list(recipients), raw))
        if self.crash_after_send is not None:
            exc, self.crash_after_send = self.crash_after_send, None
            raise exc
        return "250 ok"

    async def close(self) -> None:
        self.closed += 1

    def to(self, addr: str) -> list[bytes]:
        return [raw for _, rcpts, raw in self.sent if addr in rcpts]


__all__ = ["mail", "StubClassifier", "Clock", "Crash", "FakeMailbox", "FakeMailer", "T0", "TransientIOError",
           "PermanentIOError"]
