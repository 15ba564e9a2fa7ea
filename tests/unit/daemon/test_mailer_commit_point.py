"""SmtpMailer against a real SMTP server (aiosmtpd on loopback, in a thread): the commit point,
connection reuse, and what a dead reused connection or a refusal does.

The commit point is what makes a crash of guard never send twice (guard/daemon/journal.py): the
executor journals "sending" in ``on_commit``, so it must run after the server accepted the
envelope and before the server can have any of the message text.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from aiosmtpd.controller import Controller

from guard.errors import PermanentIOError
from guard.daemon.mailer import SmtpMailer
from guard.settings import SmtpSettings

RAW = b"From: events@crm.cat\r\nTo: pat@example.org\r\nSubject: hello\r\nMessage-ID: <x@crm.cat>\r\n\r\nHi.\r\n"


class Recorder:
    """Records the order of events on the server side; refuses RCPT to refused@."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.sessions: set[int] = set()
        self.messages: list[bytes] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused@"):
            return "550 5.1.1 no such user"
        self.events.append("rcpt")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        self.events.append("data")
        self.messages.append(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"


@pytest.fixture
def server():
    events: list[str] = []
    lock = threading.Lock()
    handler = Recorder(events)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield ctl, handler, events, lock
    finally:
        ctl.stop()


def mailer_for(ctl) -> SmtpMailer:
    return SmtpMailer(SmtpSettings(host="127.0.0.1", port=ctl.port, tls="none", timeout_seconds=10))


def test_the_commit_point_lies_between_the_envelope_and_the_message_text(server):
    ctl, handler, events, _ = server
    m = mailer_for(ctl)

    async def go():
        await m.send(RAW, "", ["pat@example.org"], on_commit=lambda: events.append("commit"))
        await m.close()

    asyncio.run(go())
    assert events == ["rcpt", "commit", "data"]
    assert handler.messages[0].replace(b"\r\n", b"\n").startswith(RAW.replace(b"\r\n", b"\n")[:40])


def test_one_connection_serves_a_batch_and_each_message_commits_once(server):
    ctl, handler, events, _ = server
    m = mailer_for(ctl)
    commits: list[int] = []

    async def go():
        for i in range(5):
            await m.send(RAW, "", [f"p{i}@example.org"], on_commit=lambda i=i: commits.append(i))
        await m.close()

    asyncio.run(go())
    assert commits == [0, 1, 2, 3, 4]
    assert len(handler.messages) == 5 and len(handler.sessions) == 1


def test_a_refused_recipient_never_reaches_the_commit_point(server):
    ctl, handler, events, _ = server
    m = mailer_for(ctl)
    commits: list[str] = []

    async def go():
        with pytest.raises(PermanentIOError):
            await m.send(RAW, "", ["refused@example.org"], on_commit=lambda: commits.append("x"))
        await m.send(RAW, "", ["pat@example.org"], on_commit=lambda: commits.append("ok"))
        await m.close()

    asyncio.run(go())
    assert commits == ["ok"] and len(handler.messages) == 1


def test_a_failing_commit_hands_nothing_over(server):
    ctl, handler, events, _ = server
    m = mailer_for(ctl)

    def boom():
        raise OSError("journal disk full")

    async def go():
        with pytest.raises(OSError):
            await m.send(RAW, "", ["pat@example.org"], on_commit=boom)
        await m.close()

    asyncio.run(go())
    assert handler.messages == []


def test_a_reused_connection_that_died_is_replaced_before_the_commit_point(server):
    ctl, handler, events, _ = server
    m = mailer_for(ctl)
    commits: list[int] = []

    async def go():
        await m.send(RAW, "", ["a@example.org"], on_commit=lambda: commits.append(1))
        m._client.close()  # as if the server had timed the idle connection out
        await m.send(RAW, "", ["b@example.org"], on_commit=lambda: commits.append(2))
        await m.close()

    asyncio.run(go())
    assert commits == [1, 2] and len(handler.messages) == 2


def test_a_big_message_commits_only_once_all_its_text_has_left_guard(server):
    """What is still in guard's own buffer dies with the process: the commit waits for it."""
    ctl, handler, events, _ = server
    m = mailer_for(ctl)
    big = RAW + b"x" * 998 + b"\r\n" + (b"line of a long forwarded original\r\n" * 200_000)
    seen: list[int] = []

    def commit():
        seen.append(m._client.protocol.transport.get_write_buffer_size())

    async def go():
        await m.send(big, "", ["pat@example.org"], on_commit=commit)
        await m.close()

    asyncio.run(go())
    assert seen == [0]
    assert len(handler.messages) == 1 and handler.messages[0].endswith(b"line of a long forwarded original\r\n")
