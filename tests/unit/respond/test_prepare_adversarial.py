"""prepare() against adversarial mail (issue 13): who is answered, what the coordinator gets, how often.

- only senders the trusted receiving server authenticated are answered; the others go to the
  coordinator with the reason;
- a reply never carries the sender's text as a live link;
- forwards and alerts about one sender are limited per hour;
- an answer to guard is never answered, and the coordinator hears about it once.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timedelta, timezone

import pytest

from guard.daemon.service import build_env, load_policy_and_templates
from guard.mail.message import parse
from guard.respond.prepare import LOOP_ALERT, SenderHistory, history_key, prepare
from guard.respond.reply_gate import ReplyHistory

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
PASS = "Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom={addr}; dmarc=pass header.from={domain}\r\n"


def _raw(sender="pat@example.net", subject="Invitation letter for my visa", auth=PASS, extra="") -> bytes:
    head = auth.format(addr=sender, domain=sender.rpartition("@")[2]) if auth else ""
    return (f"{head}From: Pat <{sender}>\r\nTo: events@crm.cat\r\nSubject: {subject}\r\n{extra}"
            "Message-ID: <p.1@example.net>\r\nDate: Mon, 05 Jan 2026 09:59:00 +0000\r\n\r\n"
            "Hello, could you send me an invitation letter for my visa? When does registration close?\r\n").encode()


@pytest.fixture(scope="module")
def setup(settings):
    policy, renderer = load_policy_and_templates(settings)
    return policy, build_env(settings, renderer, "live")


def _prepare(setup, classifier, raw, row="inquiry", sender_history=SenderHistory()):
    policy, env = setup
    msg = parse(raw)
    verdict = classifier.classify(msg)
    plan = next(r.plan for r in policy.rows if r.id == row)
    return prepare(raw, msg, verdict, plan, env=env, now=NOW, arrived=NOW,
                   histories={a.template: ReplyHistory() for a in plan.sends if a.do == "reply"},
                   breaker_alert_due=True, token="0a1b", sender_history=sender_history)


def _text(raw: bytes) -> str:
    m = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [str(m["Subject"])]
    for part in m.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            parts.append(part.get_content())
    return "\n".join(parts)


def test_an_authenticated_participant_is_answered(setup, classifier):
    d = _prepare(setup, classifier, _raw())
    assert sorted(o.kind for o in d.outgoing) == ["forward", "reply"], d.suppressed


@pytest.mark.parametrize("auth", [
    None,
    "Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom=x@{domain}; dmarc=fail (p=reject) header.from={domain}\r\n",
    "Authentication-Results: elsewhere.example; dmarc=pass header.from={domain}\r\n",
])
def test_a_forged_inquiry_goes_to_the_coordinator_with_the_reason_and_no_reply(setup, classifier, auth):
    d = _prepare(setup, classifier, _raw(auth=auth))
    assert [o.kind for o in d.outgoing] == ["forward"]
    reasons = [r for _a, rs in d.suppressed for r in rs]
    assert any(r.startswith("unauthenticated:") for r in reasons), reasons
    assert "No automatic reply was sent to the participant: unauthenticated" in _text(d.outgoing[0].raw)


def test_a_report_whose_plan_has_no_forward_is_routed_when_unauthenticated(setup, classifier):
    d = _prepare(setup, classifier, _raw(auth=None), row="report-scam")  # plan: reply + move
    assert [(o.kind, o.template) for o in d.outgoing] == [("forward", "forward_summary")]
    assert d.outgoing[0].recipient == "nhernandez@crm.cat"


def test_the_reply_never_carries_a_live_link_from_the_subject(setup, classifier):
    subject = "Visa letter - see https://www.stays-booking.example/pay?id=1 and desk@stays.example " + "x" * 120
    d = _prepare(setup, classifier, _raw(subject=subject))
    reply = next(o for o in d.outgoing if o.kind == "reply")
    text = _text(reply.raw)
    assert "https://www.stays" not in text and "stays-booking.example" not in text and "@stays.example" not in text
    assert "hxxps[:]//www[.]stays-booking[.]example" in text and "desk@stays[.]exa" in text
    subject_line = str(email.message_from_bytes(reply.raw, policy=email.policy.default)["Subject"])
    assert "x" * 60 not in subject_line and subject_line.endswith("\u2026")  # shortened


def test_forwards_about_one_sender_are_limited_per_hour(setup, classifier, settings):
    limit = settings.daemon.max_forwards_per_sender_per_hour
    d = _prepare(setup, classifier, _raw(), sender_history=SenderHistory(coordinator_last_hour=limit))
    assert [o.kind for o in d.outgoing] == ["reply"]
    reasons = [r for _a, rs in d.suppressed for r in rs]
    assert any(r.startswith("rate-limit:") for r in reasons), reasons


def test_an_answer_to_guard_gets_no_reply_and_one_loop_alert(setup, classifier):
    raw = _raw(sender="support+ticket7@helpdesk.example", subject="Re: Auto: Invitation letter for my visa",
               extra="In-Reply-To: <guard.00ff00ff00ff00ff.2@crm.cat>\r\n")
    d = _prepare(setup, classifier, raw)
    assert [(o.kind, o.template) for o in d.outgoing] == [("forward", LOOP_ALERT)]
    assert d.outgoing[0].headers["history_as"] == "support@helpdesk.example"
    assert "guard does not answer this sender automatically" in _text(d.outgoing[0].raw)
    # the loop alert went out within the window: the next answer gets only the plan's forward
    again = _prepare(setup, classifier, raw, sender_history=SenderHistory(loop_alert_last=NOW - timedelta(hours=1)))
    assert [(o.kind, o.template) for o in again.outgoing] == [("forward", "forward_summary")]
    assert any(r.startswith("loop:") for _a, rs in again.suppressed for r in rs)


def test_the_history_key_is_the_normalised_address():
    assert history_key(parse(_raw(sender="Support+Ticket12@HelpDesk.example"))) == "support@helpdesk.example"
