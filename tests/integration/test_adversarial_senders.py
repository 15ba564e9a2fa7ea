"""Adversarial senders against the real daemon (Dovecot IMAP + SMTP; issue 13, items 2-5).

- a forged From (the institute's receiving server reports DMARC fail, or only a header the
  sender wrote says "pass") gets no reply; the coordinator gets the message with the reason;
- a display name cannot add a recipient to guard's reply; the reply's subject carries no live link;
- a helpdesk answering from support+ticketN@ (no Auto-Submitted) gets one reply, never a second,
  and the coordinator one loop alert;
- list mail with only a Sender: ...-bounces header is not answered;
- forwards about one sender are limited per hour, the rest suppressed and listed in the digest.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import time

from harness import COORDINATOR, EVENTS, REPO, GuardProc, trusted_auth

PARTICIPANT = "participant@example.org"
DATE = "Mon, 05 Jan 2026 10:00:00 +0100"


def _msg(sender: str, *, subject: str = "Invitation letter for my visa", auth: str | None = "trusted",
         from_header: str | None = None, extra: str = "") -> bytes:
    head = trusted_auth(sender) if auth == "trusted" else (auth or "")
    text = (f"{head}From: {from_header or f'Pat Participant <{sender}>'}\nTo: {EVENTS}\nSubject: {subject}\n"
            f"Message-ID: <adv.{time.time_ns()}@example.org>\nDate: {DATE}\n{extra}MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n\n"
            "Hello,\n\ncould you send me an invitation letter for my visa? When does registration close?\n\nPat\n")
    return text.replace("\n", "\r\n").encode()


def _from_guard(ms, since: int = 0):
    """(envelope recipients, parsed message) of everything guard sent since ``since``."""
    out = []
    for m in ms.sink()[since:]:
        h = email.message_from_bytes(m.raw, policy=email.policy.default)
        if (h.get("X-Guard-Loop") or "").strip() == EVENTS:
            out.append((m.envelope_tos, h))
    return out


def _text(m) -> str:
    body = m.get_body(("plain",))
    return f"{m['Subject']}\n{body.get_content() if body else ''}"


def _guard(ms, tmp_path, **daemon) -> GuardProc:
    g = GuardProc(ms, tmp_path, daemon=daemon or None)
    assert g.once() == 0  # the first start: what arrives from now on is new
    return g


def test_a_forged_sender_is_not_answered_and_the_coordinator_is_told_why(clean_mailstack, tmp_path):
    ms = clean_mailstack
    g = _guard(ms, tmp_path)
    try:
        # the institute's server saw the attacker's envelope and a failing DMARC for the forged From
        dmarc_fail = ("Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom=bounce@attacker.example;\n"
                      " dkim=none; dmarc=fail (p=reject) header.from=example.org\n")
        ms.send(_msg(PARTICIPANT, auth=dmarc_fail, subject="Visa http://pay.attacker.example/x"),
                "bounce@attacker.example", [EVENTS])
        # the sender wrote a "pass" of the trusted id below the header of another server
        forged_below = ("Authentication-Results: relay.attacker.example; none\n"
                        "Authentication-Results: mx.crm.cat; dmarc=pass header.from=example.org\n")
        ms.send(_msg(PARTICIPANT, auth=forged_below), "bounce@attacker.example", [EVENTS])
        assert g.once() == 0
        out = _from_guard(ms)
        assert [t for t, m in out if PARTICIPANT in t] == []  # nothing to the forged address
        to_coordinator = [m for t, m in out if t == [COORDINATOR]]
        assert len(to_coordinator) == 2, [t for t, _ in out]
        texts = [_text(m) for m in to_coordinator]
        assert any("unauthenticated: dmarc=fail" in t for t in texts), texts
        assert any("no Authentication-Results from a trusted server" in t for t in texts), texts
    finally:
        g.cleanup()


def test_a_display_name_cannot_redirect_the_reply_and_the_subject_is_defanged(clean_mailstack, tmp_path):
    ms = clean_mailstack
    g = _guard(ms, tmp_path)
    try:
        # the encoded display name reads "Pat\r\nBcc: victim@attacker.example"
        from_header = f"=?utf-8?q?Pat=0D=0ABcc=3A_victim=40attacker.example?= <{PARTICIPANT}>"
        ms.send(_msg(PARTICIPANT, from_header=from_header, subject="Visa - see https://www.stays.example/pay now"),
                PARTICIPANT, [EVENTS])
        assert g.once() == 0
        replies = [(t, m) for t, m in _from_guard(ms) if m["Auto-Submitted"] == "auto-replied"]
        assert [t for t, _ in replies] == [[PARTICIPANT]]
        reply = replies[0][1]
        assert reply["Bcc"] is None and reply["Cc"] is None
        assert [a.addr_spec for a in reply["To"].addresses] == [PARTICIPANT]
        subject = str(reply["Subject"])
        assert "https://www.stays.example" not in subject and "hxxps[:]//www[.]stays[.]example" in subject
    finally:
        g.cleanup()


def test_a_helpdesk_answering_from_plus_addresses_gets_one_reply_and_the_coordinator_one_alert(
        clean_mailstack, tmp_path):
    ms = clean_mailstack
    g = _guard(ms, tmp_path)
    desk = "support+ticket{}@helpdesk.example"
    try:
        ms.send(_msg(desk.format(1)), desk.format(1), [EVENTS])
        assert g.once() == 0
        first = _from_guard(ms)
        replies = [m for _t, m in first if m["Auto-Submitted"] == "auto-replied"]
        assert len(replies) == 1
        guard_id = replies[0]["Message-ID"]
        since = len(ms.sink())
        for n in range(2, 6):
            # the helpdesk "answers" guard's reply from a new ticket address, without Auto-Submitted ...
            ms.send(_msg(desk.format(n), subject=f"Re: {replies[0]['Subject']}",
                         extra=f"In-Reply-To: {guard_id}\nReferences: {guard_id}\n"), desk.format(n), [EVENTS])
            # ... and opens a new ticket in another case and subaddress
            ms.send(_msg(f"Support+Ticket{n}b@HelpDesk.example"), f"Support+Ticket{n}b@HelpDesk.example", [EVENTS])
            assert g.once() == 0
        later = _from_guard(ms, since)
        assert [m for _t, m in later if m["Auto-Submitted"] == "auto-replied"] == []
        alerts = [m for t, m in later if t == [COORDINATOR] and "does not answer this sender automatically" in _text(m)]
        assert len(alerts) == 1, [_text(m)[:200] for _t, m in later]
        # every other message to the coordinator is within the per-sender limit of forwards
        assert len([1 for t, _m in later if t == [COORDINATOR]]) <= 5
    finally:
        g.cleanup()


def test_list_mail_with_only_a_bounces_sender_is_not_answered(clean_mailstack, tmp_path):
    ms = clean_mailstack
    g = _guard(ms, tmp_path)
    try:
        ms.send(_msg(PARTICIPANT, extra="Sender: seminars-bounces@lists.example.org\n"), PARTICIPANT, [EVENTS])
        ms.send(_msg("bob@example.org"), "seminars-bounces+bob=example.org@lists.example.org", [EVENTS])
        assert g.once() == 0
        assert [t for t, m in _from_guard(ms) if m["Auto-Submitted"] == "auto-replied"] == []
    finally:
        g.cleanup()


def test_forwards_about_one_sender_are_limited_and_the_rest_listed_in_the_digest(clean_mailstack, tmp_path):
    ms = clean_mailstack
    g = _guard(ms, tmp_path, max_forwards_per_sender_per_hour=2)
    try:
        for n in range(5):  # unauthenticated: each would go to the coordinator
            ms.send(_msg(PARTICIPANT, auth=None, subject=f"Invitation letter {n}"), PARTICIPANT, [EVENTS])
        assert g.once() == 0
        out = _from_guard(ms)
        assert [t for t, _m in out] == [[COORDINATOR]] * 2
        digest = subprocess.run(g.cmd()[:5] + ["digest", "--preview"], cwd=REPO, env=g.env(), capture_output=True,
                                text=True, timeout=120)
        assert digest.returncode == 0, digest.stderr
        assert digest.stdout.count("rate-limit: 2 forwards or alerts about this sender") == 3, digest.stdout
    finally:
        g.cleanup()
