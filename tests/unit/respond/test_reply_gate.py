"""The reply safety gate: a clean message passes; each refusal reason, alone, refuses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from guard.mail.message import parse
from guard.respond.reply_gate import GateConfig, ReplyHistory, may_autoreply, normalise

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
CFG = GateConfig(our_addresses=frozenset({"events@crm.cat", "nhernandez@crm.cat"}), loop_header="X-Guard-Loop",
                 require_our_address=True, window=timedelta(days=7), max_per_hour=10, backlog=timedelta(hours=24),
                 trusted_authserv_ids=frozenset({"mx.crm.cat"}))

#: what the institute's receiving server (authserv-id mx.crm.cat) adds on top of a genuine message
TRUSTED_PASS = "Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom={addr}; dmarc=pass header.from={domain}"


def msg(extra: str = "", *, sender: str = "Pat <pat@example.org>", to: str = "events@crm.cat",
        ctype: str = "text/plain; charset=utf-8", return_path: str | None = None, auth: str | None = TRUSTED_PASS,
        subject: str = "Question"):
    head = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", "Date: Mon, 05 Jan 2026 11:00:00 +0000",
            "Message-ID: <q@example.org>", f"Content-Type: {ctype}"]
    if return_path is not None:
        head.insert(0, f"Return-Path: {return_path}")
    if auth is not None:
        addr = sender.rpartition("<")[2].rstrip(">").strip()
        head.insert(0, auth.format(addr=addr, domain=addr.rpartition("@")[2]))
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
    assert any(r.startswith("backlog") for r in gate(no_date, arrived=None).reasons)


def test_one_second_internaldate_resolution_is_tolerated():
    h = ReplyHistory(first_start=NOW - timedelta(seconds=10, milliseconds=500))
    assert gate(msg(), history=h, arrived=NOW - timedelta(seconds=11)).allowed


def test_normalise():
    assert normalise("<Pat+Events@Example.ORG>") == "pat@example.org"


# -- authentication (RFC 8601 Authentication-Results of the trusted receiving server) -----------------

FORGED_BELOW = "Authentication-Results: mx.crm.cat; dmarc=pass header.from={domain}"


@pytest.mark.parametrize("auth,why", [
    (None, "no Authentication-Results header"),
    ("Authentication-Results: mx.other.example; spf=pass smtp.mailfrom={addr}; dmarc=pass header.from={domain}",
     "no Authentication-Results from a trusted server"),
    # a trusted-looking header below one of another server: the sender wrote it
    ("Authentication-Results: relay.example; spf=none\r\n" + FORGED_BELOW, "no Authentication-Results from a trusted"),
    ("Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom={addr}; dmarc=fail (p=reject) header.from={domain}",
     "dmarc=fail"),
    ("Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom=bounce@attacker.example; dkim=none",
     "spf=pass for attacker.example (not aligned with From)"),
    ("Authentication-Results: mx.crm.cat; dkim=pass header.d=attacker.example; spf=softfail smtp.mailfrom={addr}",
     "dkim=pass for attacker.example (not aligned with From)"),
    ("Authentication-Results: mx.crm.cat; dmarc=pass header.from=attacker.example",
     "dmarc=pass for attacker.example (not the From domain)"),
    ("Authentication-Results: mx.crm.cat; spf=fail smtp.mailfrom={addr}; dkim=none; dmarc=none", "spf=fail"),
])
def test_unauthenticated_senders_are_not_answered(auth, why):
    result = gate(msg(auth=auth))
    assert not result.allowed
    assert any(r.startswith("unauthenticated:") and why in r for r in result.reasons), result.reasons


@pytest.mark.parametrize("auth", [
    TRUSTED_PASS,
    "Authentication-Results: mx.crm.cat; dkim=pass (2048-bit key) header.d=mail.example.org header.s=s1; dmarc=none",
    "Authentication-Results: mx.crm.cat 1; spf=pass (sender SPF authorized) smtp.mailfrom=\"b+x@lists.example.org\"",
    # the receiving server may add one header per method; all of its topmost headers count
    "Authentication-Results: mx.crm.cat; dkim=none\r\nAuthentication-Results: MX.crm.cat; dmarc=pass header.from={domain}"
    "\r\nAuthentication-Results: mx.other.example; spf=fail",
])
def test_authenticated_and_aligned_senders_are_answered(auth):
    result = gate(msg(auth=auth))
    assert result.allowed, result.reasons


def test_several_from_headers_are_unauthenticated():
    result = gate(msg("From: Housing <housing@crm.cat>"))
    assert "unauthenticated: the message has several From headers" in result.reasons


def test_no_trusted_authserv_id_configured_means_no_replies():
    cfg = GateConfig(**{**CFG.__dict__, "trusted_authserv_ids": frozenset()})
    assert any("trusted_authserv_ids" in r for r in gate(msg(), cfg=cfg).reasons)


def test_the_authentication_requirement_can_be_relaxed():
    cfg = GateConfig(**{**CFG.__dict__, "require_authenticated": False})
    assert gate(msg(auth=None), cfg=cfg).allowed


# -- loops with ticketing systems and lists without List-* headers ----------------------------------


@pytest.mark.parametrize("extra,subject", [
    ("In-Reply-To: <guard.0a1b2c3d4e5f6789.1@crm.cat>", "Question"),
    ("References: <x@helpdesk.example> <guard.0a1b2c3d4e5f6789.2@crm.cat>", "Question"),
    ("", "Re: Auto: Invitation letter for my visa"),
    ("", "[Ticket#4711] Auto: Invitation letter for my visa"),
    ("", "AW: RE: auto: Registration"),
])
def test_an_answer_to_guard_is_never_answered(extra, subject):
    result = gate(msg(extra, subject=subject))
    assert not result.allowed
    assert any(r.startswith("loop:") for r in result.reasons), result.reasons


def test_a_subject_merely_containing_auto_is_not_a_loop():
    assert gate(msg(subject="Autonomous systems workshop: automobile parking")).allowed


@pytest.mark.parametrize("extra,return_path", [
    ("Sender: seminars-bounces@lists.example.org", None),
    ("Sender: owner-seminars@lists.example.org", None),
    ("", "<seminars-bounces+pat=example.org@lists.example.org>"),
    ("", "<seminars-request@lists.example.org>"),
    ("", "<owner-seminars@lists.example.org>"),
])
def test_list_mail_without_list_headers_is_not_answered(extra, return_path):
    result = gate(msg(extra, return_path=return_path))
    assert not result.allowed
    assert any(r.startswith("list:") for r in result.reasons), result.reasons


def test_the_domain_rate_limit_counts_the_recipients_domain():
    cfg = GateConfig(**{**CFG.__dict__, "max_per_domain_hour": 3})
    assert gate(msg(), history=ReplyHistory(domain_last_hour=2), cfg=cfg).allowed
    assert gate(msg(), history=ReplyHistory(domain_last_hour=3)).allowed  # 0: no per-domain limit
    result = gate(msg(), history=ReplyHistory(domain_last_hour=3), cfg=cfg)
    assert any(r.startswith("circuit-breaker") and "example.org" in r for r in result.reasons), result.reasons


def test_a_non_ascii_address_is_refused_with_a_reason():
    m = msg(sender="Jörg <jörg@example.org>".encode().decode(), auth=TRUSTED_PASS)
    result = gate(m, recipient="jörg@example.org")
    assert any(r.startswith("smtputf8:") for r in result.reasons), result.reasons


def test_an_encoded_display_name_in_to_is_not_our_address():
    # "=?utf-8?b?...?=" reads "events@crm.cat": a display name, never an address
    result = gate(msg(to="=?utf-8?b?ZXZlbnRzQGNybS5jYXQ=?= <someone@example.net>"))
    assert any(r.startswith("not-addressed") for r in result.reasons), result.reasons
