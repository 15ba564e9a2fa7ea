"""The reply safety gate: a clean message passes; each refusal reason, alone, refuses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from guard.mail.message import parse
from guard.respond.reply_gate import GateConfig, ReplyHistory, may_autoreply, normalise

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
CFG = GateConfig(our_addresses=frozenset({"events@crm.cat", "nhernandez@crm.cat"}), loop_header="X-Guard-Loop",
                 require_our_address=True, window=timedelta(days=7), max_per_hour=10, backlog=timedelta(hours=24))


def msg(extra: str = "", *, sender: str = "Pat <pat@example.org>", to: str = "events@crm.cat",
        ctype: str = "text/plain; charset=utf-8", return_path: str | None = None):
    head = [f"From: {sender}", f"To: {to}", "Subject: Question", "Date: Mon, 05 Jan 2026 11:00:00 +0000",
            "Message-ID: <q@example.org>", f"Content-Type: {ctype}"]
    if return_path is not None:
        head.insert(0, f"Return-Path: {return_path}")
    head += [h for h in extra.strip().splitlines() if h]
    return parse(("\r\n".join(head) + "\r\n\r\nHello?\r\n").encode())


def gate(m, *, recipient="pat@example.org", history=ReplyHistory(), arrived=NOW - timedelta(minutes=1), cfg=CFG):
    return may_autoreply(m, recipient=recipient, template="inquiry_ack", now=NOW, arrived=arrived, cfg=cfg,
                         history=history)


def test_a_clean_message_may_be_answered():
    result = gate(msg())
    assert result.allowed and result.reasons == ()


def test_auto_submitted_no_is_fine():
    assert gate(msg("Auto-Submitted: no")).allowed


@pytest.mark.parametrize("m,kwargs,reason", [
    (msg("Auto-Submitted: auto-replied"), {}, "auto-submitted"),
    (msg("Auto-Submitted: auto-generated"), {}, "auto-submitted"),
    (msg("Auto-Submitted: auto-notified"), {}, "auto-submitted"),
    (msg("X-Autoreply: yes"), {}, "auto-reply-marker"),
    (msg("X-MS-Exchange-Inbox-Rules-Loop: pat@example.org"), {}, "auto-reply-marker"),
    (msg("Precedence: auto_reply"), {}, "auto-reply-marker"),
    (msg(return_path="<>"), {}, "null-sender"),
    (msg(sender="undisclosed-recipients:;"), {"recipient": ""}, "null-sender"),
    (msg(sender="MAILER-DAEMON@mx.example.org"), {"recipient": "mailer-daemon@mx.example.org"}, "system-sender"),
    (msg(sender="postmaster@example.org"), {"recipient": "postmaster@example.org"}, "system-sender"),
    (msg(sender="no-reply@booking.example"), {"recipient": "no-reply@booking.example"}, "system-sender"),
    (msg(sender="noreply@example.org"), {"recipient": "noreply@example.org"}, "system-sender"),
    (msg(sender="seminars-request@lists.example.org"), {"recipient": "seminars-request@lists.example.org"},
     "system-sender"),
    (msg(sender="owner-seminars@lists.example.org"), {"recipient": "owner-seminars@lists.example.org"},
     "system-sender"),
    (msg("List-Id: <seminars.lists.example.org>"), {}, "list"),
    (msg("List-Unsubscribe: <mailto:u@example.org>"), {}, "list"),
    (msg("List-Post: <mailto:l@example.org>"), {}, "list"),
    (msg("Precedence: bulk"), {}, "precedence"),
    (msg("Precedence: list"), {}, "precedence"),
    (msg("Precedence: junk"), {}, "precedence"),
    (msg(ctype="multipart/report; report-type=delivery-status; boundary=b"), {}, "report"),
    (msg(ctype="multipart/report; report-type=disposition-notification; boundary=b"), {}, "report"),
    (msg("X-Auto-Response-Suppress: All"), {}, "suppress"),
    (msg("X-Auto-Response-Suppress: OOF, AutoReply"), {}, "suppress"),
    (msg("X-Guard-Loop: events@crm.cat"), {}, "loop"),
    (msg(sender="events@crm.cat"), {"recipient": "events@crm.cat"}, "own-address"),
    (msg(), {"recipient": "Events+Fwd@CRM.cat"}, "own-address"),
    (msg(to="someone-else@example.org"), {}, "not-addressed"),
    (msg(), {"history": ReplyHistory(last_same=NOW - timedelta(days=6))}, "window"),
    (msg(), {"history": ReplyHistory(last_hour=10)}, "circuit-breaker"),
    (msg(), {"arrived": NOW - timedelta(hours=25)}, "backlog"),
    (msg(), {"history": ReplyHistory(first_start=NOW - timedelta(minutes=30)),
             "arrived": NOW - timedelta(hours=1)}, "backlog"),
    (msg(), {"history": ReplyHistory(uidvalidity_reset=NOW - timedelta(minutes=5)),
             "arrived": NOW - timedelta(minutes=10)}, "backlog"),
])
def test_each_refusal(m, kwargs, reason):
    result = gate(m, **kwargs)
    assert not result.allowed
    codes = [r.split(":", 1)[0] for r in result.reasons]
    assert reason in codes, result.reasons


def test_every_reason_is_collected():
    m = msg("Auto-Submitted: auto-replied\nPrecedence: bulk\nList-Id: <x.y>\nX-Auto-Response-Suppress: All",
            return_path="<>", to="other@example.org")
    codes = {r.split(":", 1)[0] for r in gate(m).reasons}
    assert {"auto-submitted", "null-sender", "list", "precedence", "suppress", "not-addressed"} <= codes


def test_cc_and_resent_to_count_as_addressed():
    assert gate(msg("Cc: Events <events@crm.cat>", to="x@example.org")).allowed
    assert gate(msg("Resent-To: nhernandez@crm.cat", to="x@example.org")).allowed
    assert gate(msg(to="EVENTS+workshop@crm.cat")).allowed


def test_not_addressed_check_can_be_switched_off():
    cfg = GateConfig(**{**CFG.__dict__, "require_our_address": False})
    assert gate(msg(to="x@example.org"), cfg=cfg).allowed


def test_window_expires():
    assert gate(msg(), history=ReplyHistory(last_same=NOW - timedelta(days=7, minutes=1))).allowed


def test_arrival_falls_back_to_the_date_header_and_unknown_refuses():
    m = msg()
    assert gate(m, arrived=None).allowed  # Date: 11:00, an hour ago
    no_date = parse(b"From: pat@example.org\r\nTo: events@crm.cat\r\nSubject: x\r\n\r\nhi\r\n")
    assert "backlog" in gate(no_date, arrived=None).reasons[0]


def test_one_second_internaldate_resolution_is_tolerated():
    h = ReplyHistory(first_start=NOW - timedelta(seconds=10, milliseconds=500))
    assert gate(msg(), history=h, arrived=NOW - timedelta(seconds=11)).allowed


def test_normalise():
    assert normalise("<Pat+Events@Example.ORG>") == "pat@example.org"
