"""Mail from one of our own addresses is never forwarded or alerted back to the coordinator.

Found by tests/integration/test_loops.py: the coordinator's auto-responder (no Auto-Submitted, no
loop header) answered guard's forward; guard classified the answer as a report and forwarded it to
the coordinator again, whose responder answered again: about one message a second, forever.
"""

from __future__ import annotations

from datetime import datetime, timezone

from guard.daemon.service import build_env, load_policy_and_templates
from guard.mail.message import parse
from guard.respond.prepare import prepare
from guard.respond.reply_gate import ReplyHistory

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _prepare(settings, classifier, sender: str):
    policy, renderer = load_policy_and_templates(settings)
    env = build_env(settings, renderer, "live")
    # authenticated by the institute's receiving server (the sample config trusts mx.crm.cat)
    raw = (f"Authentication-Results: mx.crm.cat; dmarc=pass header.from={sender.rpartition('@')[2]}\r\n"
           f"From: Someone <{sender}>\r\nTo: events@crm.cat\r\nSubject: Re: [guard] inquiry\r\n"
           "Message-ID: <own.1@crm.cat>\r\n\r\nThank you for your message, I will get back to you shortly.\r\n").encode()
    msg = parse(raw)
    verdict = classifier.classify(msg)
    plan = next(r.plan for r in policy.rows if r.id == "inquiry")  # forward + reply
    return prepare(raw, msg, verdict, plan, env=env, now=NOW, arrived=NOW,
                   histories={"inquiry_ack": ReplyHistory()}, breaker_alert_due=True, token="00")


def test_mail_from_the_coordinator_is_not_forwarded_back(settings, classifier):
    d = _prepare(settings, classifier, settings.institute.coordinator.address)
    assert d.outgoing == ()
    reasons = [r for _action, rs in d.suppressed for r in rs]
    assert any("one of our own addresses" in r for r in reasons)


def test_mail_from_a_participant_is_still_forwarded(settings, classifier):
    d = _prepare(settings, classifier, "pat@example.net")
    assert [o.kind for o in d.outgoing] == ["forward", "reply"]
