"""The integration mail stack itself works: real Dovecot IMAP/LMTP plus our SMTP server."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

EVENTS = "events@crm.cat"  # the watched inbox
COORDINATOR = "nhernandez@crm.cat"
PARTICIPANT = "participant@example.org"


def make_message(subject: str = "Registration question", to: str = EVENTS,
                 sender: str = PARTICIPANT, body: str = "Hello,\r\nis there a fee?\r\n") -> bytes:
    return (f"From: Pat Participant <{sender}>\r\n"
            f"To: {to}\r\n"
            f"Subject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@example.org>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{body}").encode()


def test_imap_login_and_capabilities(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    with IMAPClient(ms.host, ms.imap_port, ssl=False, timeout=10) as c:
        assert b"STARTTLS" in c.capabilities()
        c.login(EVENTS, ms.users[EVENTS])
        caps = c.capabilities()
        for cap in (b"IDLE", b"MOVE", b"UIDPLUS", b"SPECIAL-USE"):
            assert cap in caps
        assert c.select_folder("INBOX")[b"EXISTS"] == 0


def test_wrong_password_is_refused_quickly(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    t0 = time.monotonic()
    with pytest.raises(LoginError):
        with ms.imap(EVENTS, password="wrong"):
            pass
    assert time.monotonic() - t0 < 1.5  # auth_failure_delay = 0, no anvil penalty


def test_starttls_verifies_with_generated_cert(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    ctx = ssl.create_default_context(cafile=str(ms.ca_cert))
    with IMAPClient(ms.host, ms.imap_port, ssl=False, timeout=10) as c:
        c.starttls(ctx)
        c.login(COORDINATOR, ms.users[COORDINATOR])
        assert b"IDLE" in c.capabilities()


def test_append_then_fetch_returns_same_bytes(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    raw = make_message()
    uid = ms.append(EVENTS, raw)
    assert uid is not None
    assert ms.fetch_all(EVENTS) == [raw]
    (msg,) = ms.fetch(EVENTS)
    assert msg.uid == uid and b"\\Seen" not in msg.flags


def test_smtp_to_events_arrives_by_lmtp_and_in_sink(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    raw = make_message()
    assert ms.send(raw, PARTICIPANT, [EVENTS]) == {}
    (delivered,) = ms.fetch_all(EVENTS)  # LMTP delivery completes before SMTP's 250
    assert delivered.endswith(raw)
    head = delivered[: len(delivered) - len(raw)]
    assert head.startswith(f"Return-Path: <{PARTICIPANT}>".encode())
    assert b"with LMTP" in head and b"(guard test smtp)" in head
    assert ms.sink() == [(PARTICIPANT, [EVENTS], raw)]
    assert ms.fetch_all(COORDINATOR) == []


def test_a_client_gone_after_the_final_dot_still_gets_its_message_delivered(clean_mailstack: Any) -> None:
    """As a real MTA: the dot arrived, so the message is queued even though the client closed the
    connection without waiting for the answer (what a SIGKILLed guard does). The message, its dot
    and the client's FIN go out in one segment (TCP_CORK), so the server sees the end of the
    stream before it has read the message: the case aiosmtpd alone drops."""
    ms = clean_mailstack
    sent = []
    for i in range(10):
        raw = make_message(to=COORDINATOR, subject=f"Registration question {i}")
        sent.append(raw)
        with socket.create_connection((ms.host, ms.smtp_port), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()  # greeting
            for cmd in (b"EHLO client.example", f"MAIL FROM:<{PARTICIPANT}>".encode(),
                        f"RCPT TO:<{COORDINATOR}>".encode(), b"DATA"):
                sock.sendall(cmd + b"\r\n")
                while (line := f.readline())[3:4] == b"-":  # multi-line EHLO answer
                    pass
                assert line[:1] in (b"2", b"3"), line
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            sock.sendall(raw + b".\r\n")
            sock.shutdown(socket.SHUT_WR)  # gone before the 250 (the FIN joins the corked data)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    deadline = time.monotonic() + 15
    while (len(ms.fetch_all(COORDINATOR)) < len(sent) or len(ms.sink()) < len(sent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    delivered = ms.fetch_all(COORDINATOR)
    assert sorted(raw for raw in sent if any(d.endswith(raw) for d in delivered)) == sorted(sent)
    assert sorted(raw for _, _, raw in ms.sink()) == sorted(sent)


def test_smtp_to_external_address_is_only_in_sink(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    raw = make_message(to="someone@elsewhere.test", sender=EVENTS)
    assert ms.send(raw, EVENTS, ["someone@elsewhere.test"]) == {}
    assert ms.sink() == [(EVENTS, ["someone@elsewhere.test"], raw)]
    for user in ms.users:
        assert ms.fetch_all(user) == []


def test_mixed_recipients_and_null_sender(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    raw = make_message(to=f"{COORDINATOR}, x@elsewhere.test")
    ms.send(raw, "", [COORDINATOR, "x@elsewhere.test", "alice+events@example.org"])
    assert len(ms.fetch_all(COORDINATOR)) == 1
    assert len(ms.fetch_all("alice@example.org")) == 1  # +detail goes to the user
    assert ms.sink() == [("", [COORDINATOR, "x@elsewhere.test", "alice+events@example.org"], raw)]


def test_unknown_local_user_is_refused(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        ms.send(make_message(to="nobody@crm.cat"), PARTICIPANT, ["nobody@crm.cat"])
    assert exc.value.recipients["nobody@crm.cat"][0] == 550
    assert ms.sink() == []


def test_idle_wakes_on_smtp_delivery(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    with ms.imap(EVENTS) as c:
        c.select_folder("INBOX")
        c.idle()
        try:
            t0 = time.monotonic()
            ms.send(make_message(), PARTICIPANT, [EVENTS])
            got = []
            while time.monotonic() - t0 < 5 and not any(r[1] == b"EXISTS" for r in got):
                got += c.idle_check(timeout=1)  # also returns "* OK Still here" every ~1 s
        finally:
            c.idle_done()
    assert (1, b"EXISTS") in got
    assert time.monotonic() - t0 < 3  # Dovecot batches notifications for 0.5 s


def test_restart_dovecot_keeps_mail(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    raw = make_message()
    ms.append(EVENTS, raw)
    with ms.imap(EVENTS) as c:
        before = c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    ms.restart_dovecot()
    assert ms.fetch_all(EVENTS) == [raw]
    with ms.imap(EVENTS) as c:
        assert c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"] == before


def test_quarantine_folder_and_move(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    uid = ms.append(EVENTS, make_message(subject="Pay the hotel now"))
    with ms.imap(EVENTS) as c:
        assert b"MOVE" in c.capabilities()
        c.create_folder("Guard/Quarantine")
        c.select_folder("INBOX")
        c.move([uid], "Guard/Quarantine")
    assert "Guard/Quarantine" in ms.folders(EVENTS)
    assert ms.fetch_all(EVENTS) == []
    assert len(ms.fetch_all(EVENTS, "Guard/Quarantine")) == 1


def test_smtp_can_be_stopped_and_started(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    ms.stop_smtp()
    with pytest.raises(ConnectionRefusedError):
        ms.send(make_message(), PARTICIPANT, [EVENTS])
    ms.start_smtp()
    ms.send(make_message(), PARTICIPANT, [EVENTS])
    assert len(ms.sink()) == 1 and len(ms.fetch_all(EVENTS)) == 1


def test_smtp_failure_switch(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    ms.smtp_fail("451 4.3.0 try later", times=1)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        ms.send(make_message(), EVENTS, ["someone@elsewhere.test"])
    assert exc.value.recipients["someone@elsewhere.test"] == (451, b"4.3.0 try later")
    ms.send(make_message(), EVENTS, ["someone@elsewhere.test"])  # switch used up
    ms.smtp_fail("452 4.3.1 full", stage="data")
    with pytest.raises(smtplib.SMTPDataError) as data_exc:
        ms.send(make_message(), EVENTS, [COORDINATOR])
    assert data_exc.value.smtp_code == 452
    ms.smtp_ok()
    assert len(ms.sink()) == 1
    assert ms.fetch_all(COORDINATOR) == []


def test_reset_empties_everything(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    ms.append(EVENTS, make_message(), folder="Guard/Quarantine")
    ms.send(make_message(), PARTICIPANT, [EVENTS, "x@elsewhere.test"])
    ms.reset()
    assert ms.folders(EVENTS) == ["INBOX"]
    assert ms.fetch_all(EVENTS) == [] and ms.sink() == []


def test_env_describes_the_stack(clean_mailstack: Any) -> None:
    ms = clean_mailstack
    env = ms.env()
    assert env["GUARD_TEST_IMAP_HOST"] == "127.0.0.1"
    assert int(env["GUARD_TEST_IMAP_PORT"]) == ms.imap_port
    assert int(env["GUARD_TEST_SMTP_PORT"]) == ms.smtp_port
    assert env["GUARD_TEST_MAIL_DIR"] == str(ms.mail_dir)
    assert env["GUARD_TEST_EVENTS_USER"] == EVENTS
    users = dict(u.split(":", 1) for u in env["GUARD_TEST_USERS"].split())
    assert users == ms.users
    assert "dovecot: running" in ms.status() and "smtp: running" in ms.status()
